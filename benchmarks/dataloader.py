"""DataLoader throughput of the training data path: clips/s at 0, 1 and 2 workers vs pure decode.

    python benchmarks/dataloader.py [--clips 64] [--rounds 3] [--seed 0]

Data: four generated 300-frame 320x240 H.264 videos (GOP 32). Each round reads the same ``--clips`` random
16-frame clips (uniform over videos and positions) five ways, in an order that rotates from round to round:

* ``decode``: ``read_clip`` at the decode size (short side 128, resized by swscale during the colour
  conversion), in this process, one clip after another;
* ``decode + transform``: the same plus ``CleanTransform(112, 128)`` (float, centre crop, normalise);
* ``DataLoader w=0/1/2``: ``ClipDataset`` (decode + the same transform) through a ``DataLoader`` with
  ``collate_clips``, batch 8, 0/1/2 worker processes (started anew each round: their start-up is included,
  and the time to the first batch is printed). Each worker pins torch to 1 thread.

CPU time = this process (``time.process_time``) + the worker processes (``os.times`` children, reaped when
the loader's workers exit). Figures are medians over rounds. Goals: ``w=0`` at least 0.9x the clips/s of
``decode + transform`` (the dataset and collate add little); ``w=2`` at least 1.6x ``w=0`` -- a goal that only
applies on 2 free cores: the load average is printed beside it.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from typing import Dict, List

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from lightning_temporal.data.dataset import ClipDataset, collate_clips  # noqa: E402
from lightning_temporal.data.manifest import VideoManifest, VideoRecord  # noqa: E402
from lightning_temporal.data.transforms import CleanTransform, short_side_size  # noqa: E402
from lightning_temporal.data.video import probe, read_clip  # noqa: E402
from tests.videos import write_video  # noqa: E402

T, SHORT, CROP, BATCH = 16, 128, 112, 8
VARIANTS = ("decode", "decode + transform", "DataLoader w=0", "DataLoader w=1", "DataLoader w=2")


def _one_thread(_):
    torch.set_num_threads(1)


def _cpu() -> float:
    t = os.times()
    return time.process_time() + t.children_user + t.children_system


def run_variant(name: str, ds: ClipDataset, clips: List[tuple]):
    """(wall s, CPU s, first batch s) to read ``clips`` the way ``name`` says."""
    c0, w0 = _cpu(), time.perf_counter()
    first = None
    if name.startswith("decode"):
        for v, s in clips:
            r = ds.manifest[v]
            frames = read_clip(r.path, s, T, size=short_side_size(r.height, r.width, SHORT))
            if name.endswith("transform"):
                ds.transform(frames)
            first = first or time.perf_counter() - w0
    else:
        workers = int(name[-1])
        loader = torch.utils.data.DataLoader(ds, batch_size=BATCH, sampler=clips, collate_fn=collate_clips,
                                             num_workers=workers, worker_init_fn=_one_thread if workers else None)
        n = 0
        for batch in loader:
            n += batch["clip"].shape[0]
            first = first or time.perf_counter() - w0
        assert n == len(clips), f"{len(clips) - n} clips skipped"
        del loader  # workers exit here; their CPU time is then in os.times().children_*
    return time.perf_counter() - w0, _cpu() - c0, first


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clips", type=int, default=64, help="clips per round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (figures are medians over them), >= 3")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rounds = max(3, args.rounds)
    torch.set_num_threads(1)
    rng = np.random.default_rng(args.seed)
    load0 = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        records = []
        for k in range(4):
            path = write_video(os.path.join(tmp, f"v{k}.mp4"), 300, (240, 320), gop=32)
            info = probe(path)
            records.append(VideoRecord(path, k % 2, info.num_frames, height=info.height, width=info.width))
        ds = ClipDataset(VideoManifest(records, ["a", "b"]), clip_len=T, transform=CleanTransform(CROP, SHORT),
                         decode_size=SHORT)
        clips = [(int(rng.integers(0, 4)), int(rng.integers(0, 300 - T + 1))) for _ in range(args.clips)]
        results: Dict[str, List[tuple]] = {k: [] for k in VARIANTS}
        for r in range(rounds):
            for name in VARIANTS[r % len(VARIANTS):] + VARIANTS[:r % len(VARIANTS)]:
                results[name].append(run_variant(name, ds, clips))
    load1 = os.getloadavg()
    med = {k: np.median(np.array(v), axis=0) for k, v in results.items()}  # wall, cpu, first batch
    n = args.clips
    print(f"{n} clips of {T} frames per round (4 videos 320x240 H.264 GOP 32, decoded at short side {SHORT}, "
          f"CleanTransform({CROP}, {SHORT})), batch {BATCH}, medians of {rounds} rounds; torch threads 1 "
          f"everywhere; load average {load0[0]:.2f} before, {load1[0]:.2f} after ({os.cpu_count()} cores)\n")
    print("| variant | clips/s (wall) | CPU ms per clip (all processes) | first batch after (s) | goal |")
    print("|---|---|---|---|---|")
    rate = {k: n / m[0] for k, m in med.items()}
    goals = {
        "DataLoader w=0": (rate["DataLoader w=0"] / rate["decode + transform"], 0.9, "x decode + transform"),
        "DataLoader w=2": (rate["DataLoader w=2"] / rate["DataLoader w=0"], 1.6, "x w=0 (2 free cores)"),
    }
    for k in VARIANTS:
        goal = ""
        if k in goals:
            r, g, what = goals[k]
            goal = f">= {g} {what}: {r:.2f} {'met' if r >= g else 'NOT met'}"
        print(f"| {k} | {rate[k]:.1f} | {1e3 * med[k][1] / n:.2f} | {med[k][2]:.2f} | {goal} |")


if __name__ == "__main__":
    main()
