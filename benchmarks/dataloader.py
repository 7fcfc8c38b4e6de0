"""Training throughput as a user sees it: clips/s and CPU per clip of ``ClipDataset`` + ``ClipLoader`` at 0, 2
and all workers, for 112² and 224² training clips from 240p, 480p, 720p and 1080p H.264 sources, with the
decode / transform / collate split.

    python benchmarks/dataloader.py [--rounds 3] [--clips 16] [--seconds 4] [--gop 32] [--quick]
                                    [--out benchmarks/results/dataloader.json] [--markdown ...dataloader.md]

Sources (generated here with PyAV, one per size): a textured scene that pans, with an object moving across it,
``--seconds`` at 25 fps, encoded by libx264 (preset veryfast, CRF 23, a keyframe every ``--gop`` frames and no
others, x264's default 3 B-frames), at 240p (426x240), 480p (854x480), 720p (1280x720) and 1080p (1920x1080).
Each source is copied to ``--clips`` files listed as ``--clips`` videos of one manifest, so that every epoch reads
one clip of each file in a shuffled order: every clip opens its file afresh, as in an epoch over a large dataset
(the per-process cache keeps 4 open files). Frame indices are in memory (the manifest was probed in the main
process, whose caches the workers inherit); on a dataset larger than that cache each clip also pays one demux
pass, printed apart as ``index``.

Clip settings, as the recipes (and ``TemporalDataModule``) build them: ``112``: 16 frames, stride 1, decoded at
short side 128 (the resize happens in swscale during the colour conversion, ``decode_size=short_side``), then
``TrainTransform(112, 128)`` (random 112² crop, random horizontal flip, normalisation; the AFEW / UNBC / UCF101
recipes); ``224``: 32 frames at stride 2, short side 256, ``TrainTransform(224, 256)`` (the Kinetics and
Mini-Kinetics r3d recipes). Batches of ``--batch`` clips (``collate_clips``), a ``ClipSampler`` (uniform
policy) and a ``ClipLoader``; workers are persistent (as the data module makes them), started and warmed up by
one untimed epoch (its wall time is the ``startup_s`` of the results), and pin torch to 1 thread (as
``DataLoader`` does); this process pins it to 1 too and reads one untimed batch first (the allocator's first
large blocks).

For every source x clip setting, each round is one epoch (the same plan for every variant of the round), read
by the variants in an order that rotates from round to round:

* ``split`` (in this process, clip by clip): the sampler's plan, the dataset's per-clip index check
  (``probe(exact=False)``), ``load_clip`` (decode), the transform (seeded as the dataset seeds it), and
  ``collate_clips`` per batch; each stage timed on its own.
* ``w=0``, ``w=2``, ``w=<all>`` (``os.cpu_count()``; the same as 2 on a 2-CPU machine): one epoch of the
  ``ClipLoader`` end to end.

CPU time = this process (``time.process_time``) + the workers (``/proc/<pid>/schedstat``, nanoseconds; checked
at the end against ``getrusage(RUSAGE_CHILDREN)`` once the workers have exited). Figures are medians over
rounds of the per-clip means. ``other`` is the CPU per clip of a loader beyond the split's decode + transform +
collate of the same round: at w=0 the sampler, the per-item work and the DataLoader's fetch; with workers also
the hand-over of batches between processes. Every variant must deliver the same clips (checked every round on
a checksum of every batch). The checksum, a strided sum, touches every page of a batch, as the training step that
reads it would: a batch made by a worker arrives in shared memory that this process has not mapped yet. On a shared machine the wall-clock figures depend on the
load (printed before and after); the CPU figures much less.
"""
from __future__ import annotations

import argparse
import cProfile
import functools
import json
import multiprocessing
import os
import platform
import pstats
import resource
import shutil
import statistics
import sys
import tempfile
import time
from typing import Dict, Iterator, List, Optional, Sequence

import av
import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from lightning_temporal.data.dataset import ClipDataset, collate_clips, load_clip  # noqa: E402
from lightning_temporal.data.manifest import VideoManifest, VideoRecord  # noqa: E402
from lightning_temporal.data.transforms import TrainTransform  # noqa: E402
from lightning_temporal.data.video import clear_index_cache, probe  # noqa: E402
from lightning_temporal.sampling.sampler import ClipLoader, ClipSampler  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
RESULTS = os.path.join(ROOT, "benchmarks", "results", "dataloader.json")
SOURCES = {"240p": (240, 426), "480p": (480, 854), "720p": (720, 1280), "1080p": (1080, 1920)}
# name -> (clip_len, stride, crop_size, short_side), as the recipes set them
CLIPS = {"112": (16, 1, 112, 128), "224": (32, 2, 224, 256)}
FPS, PRESET, CRF = 25, "veryfast", 23
STAGES = ("plan", "check", "decode", "transform", "collate")


# ----------------------------------------------------------------------------------------------------------
# Sources

def _smooth_noise(rng: np.random.Generator, height: int, width: int, cell: float) -> torch.Tensor:
    """float [3, height, width]: uniform noise on a grid of ``cell``-pixel cells, bicubically upsampled."""
    small = torch.from_numpy(rng.random((3, max(2, int(height / cell)), max(2, int(width / cell))), np.float32))
    return F.interpolate(small[None], size=(height, width), mode="bicubic", align_corners=False)[0]


def scene(height: int, width: int, num_frames: int, seed: int = 0) -> Iterator[np.ndarray]:
    """``num_frames`` uint8 [height, width, 3] frames: a textured background panning right and down (coarse structure
    plus fine detail, both scaled with the frame size, so every size shows the same scene) and a textured
    square moving the other way."""
    rng = np.random.default_rng(seed)
    unit = height / 240  # pixels per 240p pixel
    step_y, step_x = max(1, round(0.5 * unit)), max(1, round(1.5 * unit))
    bh, bw = height + step_y * num_frames, width + step_x * num_frames
    bg = 160 * _smooth_noise(rng, bh, bw, 24 * unit) + 60 * _smooth_noise(rng, bh, bw, 2 * unit) + 18
    side = height // 3
    obj = 200 * _smooth_noise(rng, side, side, 6 * unit) + 30
    bg, obj = bg.clamp(0, 255).byte().permute(1, 2, 0).numpy(), obj.clamp(0, 255).byte().permute(1, 2, 0).numpy()
    for i in range(num_frames):  # generation only (untimed)
        y, x = step_y * (num_frames - 1 - i), step_x * (num_frames - 1 - i)
        frame = bg[y:y + height, x:x + width].copy()
        top = int((height - side) * (0.5 + 0.4 * np.sin(i / 9)))
        left = int((width - side) * (1 - (i / max(1, num_frames - 1))))
        frame[top:top + side, left:left + side] = obj
        yield frame


def write_source(path: str, height: int, width: int, num_frames: int, gop: int) -> str:
    """Encode :func:`scene` as H.264 (libx264, ``PRESET``, CRF ``CRF``, keyframes every ``gop`` frames only)."""
    with av.open(path, "w") as out:
        stream = out.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": PRESET, "crf": str(CRF),
                          "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0"}
        for frame in scene(height, width, num_frames):
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


# ----------------------------------------------------------------------------------------------------------
# CPU accounting of worker processes

def _record_pid(pids, worker_id: int) -> None:
    pids[worker_id] = os.getpid()


def _cpu_seconds(pids: Sequence[int]) -> float:
    """Seconds on CPU of processes ``pids`` (all their threads), from the scheduler's nanosecond counters (0: a
    worker not started yet)."""
    total = 0
    for pid in filter(None, pids):
        with open(f"/proc/{pid}/schedstat") as f:
            total += int(f.read().split()[0])
    return total / 1e9


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _checksum(batch: Dict[str, object]) -> tuple:
    """What a batch holds, cheaply: its keys and a strided float64 sum of its clips."""
    clip = batch["clip"]
    return (tuple(batch["video_idx"].tolist()), tuple(batch["start"].tolist()),
            float(clip.reshape(-1)[::101].double().sum()))


class Loader:
    """A ``ClipLoader`` with ``workers`` persistent workers, timed one epoch at a time."""

    def __init__(self, ds: ClipDataset, workers: int, batch: int, seed: int):
        self.workers = workers
        self.pids = multiprocessing.Array("i", max(1, workers))  # written by each worker (fork: shared memory)
        self.sampler = ClipSampler(ds.num_positions, seed=seed)
        self.loader = ClipLoader(ds, batch_size=batch, sampler=self.sampler, collate_fn=collate_clips,
                                 num_workers=workers, persistent_workers=workers > 0,
                                 worker_init_fn=functools.partial(_record_pid, self.pids) if workers else None)

    def worker_cpu(self) -> float:
        return _cpu_seconds(self.pids[:self.workers]) if self.workers else 0.0

    def epoch(self, epoch: int, checksums: Optional[list] = None) -> dict:
        """Read one epoch; returns clips, wall s, CPU s of this process and of the workers."""
        self.sampler.set_epoch(epoch)
        n = 0
        k0, c0, w0 = self.worker_cpu(), time.process_time(), time.perf_counter()
        for batch in self.loader:
            n += batch["clip"].shape[0]
            assert batch["skipped"].numel() == 0, batch["skip_errors"]
            if checksums is not None:
                checksums.append(_checksum(batch))
        wall, main = time.perf_counter() - w0, time.process_time() - c0
        return {"clips": n, "wall": wall, "main_cpu": main, "worker_cpu": self.worker_cpu() - k0}

    def close(self) -> float:
        """Shut the workers down (they exit and are reaped); returns their CPU seconds by schedstat so far."""
        cpu = self.worker_cpu()
        del self.loader
        return cpu


def split_epoch(ds: ClipDataset, sampler: ClipSampler, epoch: int, batch: int,
                checksums: Optional[list] = None) -> dict:
    """One epoch in this process with every stage timed on its own, clip by clip: {stage: (cpu s, wall s)}."""
    cpu = dict.fromkeys(STAGES, 0.0)
    wall = dict.fromkeys(STAGES, 0.0)

    def timed(stage, fn, *args, **kwargs):
        c0, w0 = time.process_time(), time.perf_counter()
        out = fn(*args, **kwargs)
        cpu[stage] += time.process_time() - c0
        wall[stage] += time.perf_counter() - w0
        return out

    sampler.set_epoch(epoch)
    keys = timed("plan", list, sampler)
    items = []
    for v, s, seed in keys:
        record = ds.manifest[v]
        timed("check", probe, record.path, exact=False)
        frames = timed("decode", load_clip, record, s, ds.clip_len, ds.stride, ds.decode_size)
        clip = timed("transform", ds.transform, frames, generator=torch.Generator().manual_seed(seed))
        items.append({"clip": clip, "label": record.label, "video_idx": v, "start": s})
        if len(items) == batch:
            out = timed("collate", collate_clips, items)
            if checksums is not None:
                checksums.append(_checksum(out))
            items = []
    if items:
        out = timed("collate", collate_clips, items)
        if checksums is not None:
            checksums.append(_checksum(out))
    return {"clips": len(keys), "cpu": cpu, "wall": wall}


def profile_w0(loader: Loader, epoch: int, top: int = 14) -> List[dict]:
    """cProfile of one w=0 epoch: the ``top`` functions by own time, with calls and own / cumulative ms per
    clip (profiler overhead included)."""
    prof = cProfile.Profile()
    prof.enable()
    loader.epoch(epoch)
    prof.disable()
    stats = pstats.Stats(prof).stats  # (file, line, name) -> (calls, primitive calls, tottime, cumtime, callers)
    rows = sorted(stats.items(), key=lambda kv: -kv[1][2])[:top]
    clips = len(loader.sampler)
    own = [{"function": f"{os.path.basename(f)}:{name}", "calls": c, "own_ms_per_clip": 1e3 * tt / clips,
            "cum_ms_per_clip": 1e3 * ct / clips} for (f, _, name), (c, _, tt, ct, _) in rows]
    return own


# ----------------------------------------------------------------------------------------------------------
# One source x clip setting

def run_cell(paths: List[str], info, clip: str, workers: Sequence[int], rounds: int, batch: int,
             seed: int, profile: bool) -> dict:
    clip_len, stride, crop, short = CLIPS[clip]
    records = [VideoRecord(p, k % 2, info.num_frames, height=info.height, width=info.width)
               for k, p in enumerate(paths)]
    ds = ClipDataset(VideoManifest(records, ["a", "b"]), clip_len=clip_len, stride=stride,
                     transform=TrainTransform(crop, short, flip=True), decode_size=short)
    split_sampler = ClipSampler(ds.num_positions, seed=seed)
    split_sampler.set_epoch(0)
    collate_clips([ds[key] for key in list(split_sampler)[:batch]])  # one batch in this process: warms its allocator
    loaders = {w: Loader(ds, w, batch, seed) for w in workers}
    startup = {}
    for w, loader in loaders.items():  # epoch 0, untimed: starts the workers
        t0 = time.perf_counter()
        if w:
            loader.epoch(0)
        startup[w] = time.perf_counter() - t0
    variants = ["split"] + [f"w={w}" for w in workers]
    split_rounds, loader_rounds = [], {w: [] for w in workers}
    for r in range(rounds):
        order = variants[r % len(variants):] + variants[:r % len(variants)]
        sums: Dict[str, list] = {name: [] for name in variants}
        for name in order:
            if name == "split":
                split_rounds.append(split_epoch(ds, split_sampler, 1 + r, batch, sums[name]))
            else:
                w = int(name[2:])
                loader_rounds[w].append(loaders[w].epoch(1 + r, sums[name]))
        for name in variants[1:]:  # every variant delivered the same clips, bit for bit (checksums)
            assert sums[name] == sums["split"], f"{clip}, {name}: the loader's batches differ from the split's"
    prof = profile_w0(loaders[0], 1 + rounds) if profile and 0 in loaders else None
    worker_schedstat = sum(loaders[w].close() for w in workers)
    del loaders

    def med(values):
        return statistics.median(values)

    n = len(records)
    split = {f"{stage}_{kind}_ms": med([1e3 * s[kind][stage] / s["clips"] for s in split_rounds])
             for stage in STAGES for kind in ("cpu", "wall")}
    per_round_sum = [sum(s["cpu"][k] for k in ("decode", "transform", "collate")) / s["clips"]
                     for s in split_rounds]
    rows = []
    for w in workers:
        rs = loader_rounds[w]
        assert all(x["clips"] == n for x in rs), (clip, w, [x["clips"] for x in rs])
        cpu = [(x["main_cpu"] + x["worker_cpu"]) / n for x in rs]
        rows.append({
            "workers": w,
            "clips_per_s": med([n / x["wall"] for x in rs]),
            "wall_ms_per_clip": med([1e3 * x["wall"] / n for x in rs]),
            "cpu_ms_per_clip": med([1e3 * c for c in cpu]),
            "main_cpu_ms_per_clip": med([1e3 * x["main_cpu"] / n for x in rs]),
            "worker_cpu_ms_per_clip": med([1e3 * x["worker_cpu"] / n for x in rs]),
            # beyond the split's decode + transform + collate of the same round
            "other_cpu_ms_per_clip": med([1e3 * (c - d) for c, d in zip(cpu, per_round_sum)]),
            "startup_s": startup[w],
        })
    return {"clip": clip, "clip_len": clip_len, "stride": stride, "crop_size": crop, "short_side": short,
            "split": split, "loaders": rows, "profile_w0": prof, "worker_cpu_schedstat_s": worker_schedstat}


# ----------------------------------------------------------------------------------------------------------
# Report

def machine() -> dict:
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            thp = f.read().split("[", 1)[1].split("]", 1)[0]  # the selected mode, e.g. "madvise"
    except (OSError, IndexError):
        thp = "unknown"
    return {"nproc": os.cpu_count(), "cpu_model": model, "python": platform.python_version(),
            "torch": torch.__version__, "av": av.__version__, "torch_threads": torch.get_num_threads(),
            "transparent_hugepage": thp, "THP_MEM_ALLOC_ENABLE": os.environ.get("THP_MEM_ALLOC_ENABLE", "")}


def rows_of(results: dict) -> List[dict]:
    """One flat row per source x clip x workers (the table's rows)."""
    out = []
    for cell in results["cells"]:
        for r in cell["loaders"]:
            out.append({"source": cell["source"], "clip": cell["clip"], **r,
                        **{f"{s}_ms": cell["split"][f"{s}_cpu_ms"] for s in ("decode", "transform", "collate")}})
    return out


def settings_line(results: dict) -> str:
    s, m = results["settings"], results["machine"]
    load = results["load"]
    return (f"{m['nproc']} CPUs ({m['cpu_model']}), torch {m['torch']} with {m['torch_threads']} thread per "
            f"process, PyAV {m['av']}, {_thp(m)}; load average {load['before'][0]:.2f} before, {load['after'][0]:.2f} after; "
            f"{s['clips']} clips per epoch (one per file), batch {s['batch']}, medians of {s['rounds']} epochs; "
            f"sources {s['seconds']} s at {FPS} fps, H.264 ({PRESET}, CRF {CRF}), GOP {s['gop']}")


def _thp(m: dict) -> str:
    torch_thp = "on" if m.get("THP_MEM_ALLOC_ENABLE") not in ("", "0", None) else "off"
    return f"transparent huge pages {m.get('transparent_hugepage', 'unknown')} (torch's THP_MEM_ALLOC_ENABLE {torch_thp})"


def thp_line(base: dict, thp: dict) -> str:
    """One README sentence: the collate CPU per clip (w=0 split) without and with torch's huge-page allocator
    (``THP_MEM_ALLOC_ENABLE=1``), over the cells both results files hold (two runs, not interleaved)."""
    a = {(c["source"], c["clip"]): c for c in base["cells"]}
    b = {(c["source"], c["clip"]): c for c in thp["cells"]}
    parts = [f"{k[0]} {k[1]}² {a[k]['split']['collate_cpu_ms']:.1f} → {b[k]['split']['collate_cpu_ms']:.1f} ms"
             for k in a if k in b]
    return ("With `THP_MEM_ALLOC_ENABLE=1` in the environment (torch then asks the kernel for huge pages for "
            "blocks of 2 MB and more) the collate CPU per clip went " + ", ".join(parts)
            + f" (`benchmarks/results/dataloader_thp.json`, a separate run at load average "
            f"{thp['load']['before'][0]:.2f} before, {thp['load']['after'][0]:.2f} after).")


def markdown(results: dict) -> str:
    """The full table: source x clip x workers -> clips/s, wall and CPU per clip, the split at w=0."""
    lines = [f"Settings: {settings_line(results)}.", "",
             "| source | clip | workers | clips/s | wall ms/clip | CPU ms/clip | of it in workers | decode ms | "
             "transform ms | collate ms | other ms |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows_of(results):
        lines.append(
            f"| {r['source']} | {r['clip']}² | {r['workers']} | {r['clips_per_s']:.1f} | {r['wall_ms_per_clip']:.1f} "
            f"| {r['cpu_ms_per_clip']:.1f} | {r['worker_cpu_ms_per_clip']:.1f} | {r['decode_ms']:.1f} | "
            f"{r['transform_ms']:.1f} | {r['collate_ms']:.2f} | {r['other_cpu_ms_per_clip']:+.2f} |")
    lines += ["", "decode / transform / collate: CPU ms per clip in this process, clip by clip, in the same epochs "
              "(the same for every worker count); other: the loader's CPU per clip beyond their sum.", "",
              "| source | bitrate Mbit/s | index (one demux pass, cold) ms |", "|---|---|---|"]
    for src in results["sources"]:
        lines.append(f"| {src['name']} ({src['width']}x{src['height']}) | {src['mbit_per_s']:.2f} | "
                     f"{src['index_ms']:.2f} |")
    lines += ["", "The w=0 overhead beyond decode + transform (CPU ms per clip):", "",
              "| source | clip | decode + transform | w=0 | ratio | sampler plan | index check | collate | "
              "rest (DataLoader fetch, item dict) |", "|---|---|---|---|---|---|---|---|---|"]
    for cell in results["cells"]:
        sp = cell["split"]
        w0 = next((r for r in cell["loaders"] if r["workers"] == 0), None)
        if w0 is None:
            continue
        dt = sp["decode_cpu_ms"] + sp["transform_cpu_ms"]
        rest = w0["cpu_ms_per_clip"] - dt - sp["plan_cpu_ms"] - sp["check_cpu_ms"] - sp["collate_cpu_ms"]
        lines.append(f"| {cell['source']} | {cell['clip']}² | {dt:.2f} | {w0['cpu_ms_per_clip']:.2f} | "
                     f"{w0['cpu_ms_per_clip'] / dt:.3f} | {sp['plan_cpu_ms']:.3f} | {sp['check_cpu_ms']:.3f} | "
                     f"{sp['collate_cpu_ms']:.3f} | {rest:+.3f} |")
    for cell in results["cells"]:
        if cell.get("profile_w0"):
            lines += ["", f"cProfile of one w=0 epoch, {cell['source']} {cell['clip']}² (profiler overhead "
                      "included), the functions with the most own time:", "",
                      "| function | calls | own ms/clip | cumulative ms/clip |", "|---|---|---|---|"]
            lines += [f"| `{p['function']}` | {p['calls']} | {p['own_ms_per_clip']:.3f} | {p['cum_ms_per_clip']:.3f} |"
                      for p in cell["profile_w0"]]
    chk = results["rusage_check"]
    lines += ["", f"Worker CPU: {chk['schedstat_s']:.2f} s by /proc schedstat, {chk['rusage_children_s']:.2f} s by "
              "getrusage(RUSAGE_CHILDREN) after the workers exited (warm-up epochs and shut-down included)."]
    return "\n".join(lines) + "\n"


def _span(values: Sequence[float], fmt: str) -> str:
    lo, hi = min(values), max(values)
    return format(lo, fmt) if format(lo, fmt) == format(hi, fmt) else f"{lo:{fmt}}–{hi:{fmt}}"


def readme_block(results: dict) -> str:
    """The README's "Training throughput" figures: a summary line, the table (per source and clip: the w=0
    split, each worker count's clips/s and CPU ms per clip) and the line with the machine, load and settings.
    Every figure is read from ``results`` (``tests/test_dataloader_results.py`` checks the README holds exactly
    this text)."""
    workers = sorted({r["workers"] for r in rows_of(results)})
    cells = results["cells"]
    by = [{r["workers"]: r for r in c["loaders"]} for c in cells]
    w0 = [b[0]["cpu_ms_per_clip"] for b in by]
    dt = [c["split"]["decode_cpu_ms"] + c["split"]["transform_cpu_ms"] for c in cells]
    decode_share = [100 * c["split"]["decode_cpu_ms"] / w for c, w in zip(cells, w0)]
    summary = [f"At w=0 decoding is {_span(decode_share, '.0f')} % of the CPU per clip, and the loader costs "
               f"{_span([w / d for w, d in zip(w0, dt)], '.2f')}× decode + transform (collate included)"]
    for w in workers[1:]:
        cpu = [b[w]["cpu_ms_per_clip"] / b[0]["cpu_ms_per_clip"] for b in by]
        rate = [b[w]["clips_per_s"] / b[0]["clips_per_s"] for b in by]
        summary.append(f"with {w} workers a clip costs {_span(cpu, '.2f')}× the CPU of w=0 and the loader delivers "
                       f"{_span(rate, '.2f')}× its clips/s")
    head = ("| source | clip | decode ms | transform ms | collate ms | "
            + " | ".join(f"w={w}: clips/s, CPU ms/clip" for w in workers) + " |")
    lines = ["; ".join(summary) + ".", "", head, "|---|---|---|---|---|" + "---|" * len(workers)]
    for cell, b in zip(cells, by):
        sp = cell["split"]
        lines.append(f"| {cell['source']} | {cell['clip']}² | {sp['decode_cpu_ms']:.1f} | "
                     f"{sp['transform_cpu_ms']:.1f} | {sp['collate_cpu_ms']:.1f} | "
                     + " | ".join(f"{b[w]['clips_per_s']:.1f}, {b[w]['cpu_ms_per_clip']:.1f}" for w in workers) + " |")
    lines += ["", f"Measured on {settings_line(results)}."]
    return "\n".join(lines)


def read_results(path: str = RESULTS) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


# ----------------------------------------------------------------------------------------------------------

def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="timed epochs per cell (figures are medians)")
    parser.add_argument("--clips", type=int, default=16, help="files per source = clips per epoch")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=4.0, help="length of each source")
    parser.add_argument("--gop", type=int, default=32, help="keyframe interval of the sources (frames)")
    parser.add_argument("--sources", nargs="+", default=list(SOURCES), choices=list(SOURCES))
    parser.add_argument("--clip-sizes", nargs="+", default=list(CLIPS), choices=list(CLIPS))
    parser.add_argument("--workers", type=int, nargs="+", default=None,
                        help="worker counts (default: 0, 2 and os.cpu_count())")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-profile", action="store_true", help="skip the cProfile of a w=0 epoch")
    parser.add_argument("--quick", action="store_true",
                        help="a few seconds, for the tests: 240p only, 2.6 s, 4 clips, batch 2, 1 round, workers 0 "
                             "and 2")
    parser.add_argument("--out", default=None, help="results JSON (default: none written)")
    parser.add_argument("--markdown", default=None, help="results markdown (default: none written)")
    args = parser.parse_args(argv)
    if args.quick:
        args.sources, args.seconds, args.clips, args.batch, args.rounds = ["240p"], 2.6, 4, 2, 1
        args.workers = args.workers or [0, 2]
    workers = sorted(set(args.workers if args.workers is not None else [0, 2, os.cpu_count() or 1]))
    torch.set_num_threads(1)
    num_frames = int(round(args.seconds * FPS))
    load_before = os.getloadavg()
    children0 = _children_cpu()
    results = {"machine": machine(), "load": {"before": load_before},
               "settings": {"rounds": args.rounds, "clips": args.clips, "batch": args.batch, "seconds": args.seconds,
                            "fps": FPS, "gop": args.gop, "preset": PRESET, "crf": CRF, "workers": workers,
                            "quick": bool(args.quick), "seed": args.seed,
                            "clips_settings": {k: dict(zip(("clip_len", "stride", "crop_size", "short_side"), v))
                                               for k, v in CLIPS.items()}},
               "sources": [], "cells": []}
    schedstat = 0.0
    tmp = tempfile.mkdtemp(prefix="dataloader_bench_")
    try:
        for name in args.sources:
            height, width = SOURCES[name]
            first = write_source(os.path.join(tmp, f"{name}_0.mp4"), height, width, num_frames, args.gop)
            paths = [first] + [shutil.copyfile(first, os.path.join(tmp, f"{name}_{k}.mp4"))
                               for k in range(1, args.clips)]
            # the cold index: one demux pass per file, as a clip of a video outside the index cache pays it
            index_ms = []
            for p in paths:
                clear_index_cache()
                c0 = time.process_time()
                info = probe(p, exact=False)
                index_ms.append(1e3 * (time.process_time() - c0))
            for p in paths:
                probe(p, exact=False)  # back in the index cache (the workers inherit it)
            results["sources"].append({
                "name": name, "height": info.height, "width": info.width, "frames": info.num_frames,
                "mbit_per_s": os.path.getsize(first) * 8 / 1e6 / (info.num_frames / FPS),
                "index_ms": statistics.median(index_ms)})
            for clip in args.clip_sizes:
                cell = run_cell(paths, info, clip, workers, args.rounds, args.batch, args.seed,
                                profile=not args.no_profile and name == args.sources[0] and clip == args.clip_sizes[0])
                schedstat += cell.pop("worker_cpu_schedstat_s")
                results["cells"].append({"source": name, **cell})
                print(f"  {name} {clip}² done (load {os.getloadavg()[0]:.2f})", flush=True)
            clear_index_cache()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    results["load"]["after"] = os.getloadavg()
    results["rusage_check"] = {"schedstat_s": schedstat, "rusage_children_s": _children_cpu() - children0}
    text = markdown(results)
    print(text)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=1)
    if args.markdown:
        with open(args.markdown, "w", encoding="utf-8") as f:
            f.write(text)
    return results


if __name__ == "__main__":
    main()
