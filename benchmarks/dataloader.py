"""DataLoader throughput of the training data path: clips/s at 0, 1 and 2 workers vs pure decode.

    python benchmarks/dataloader.py [--clips 48] [--rounds 5] [--seed 0]

Data: four generated 300-frame 320x240 H.264 videos (GOP 32). Every round reads the same ``--clips`` random
16-frame clips (uniform over videos and positions) five ways, in an order that rotates from round to round:

* ``decode``: ``read_clip`` at the decode size (short side 128, resized by swscale during the colour
  conversion), in this process;
* ``decode + transform``: the same plus ``CleanTransform(112, 128)`` (float, centre crop, normalise);
* ``DataLoader w=0/1/2``: ``ClipDataset`` (decode + the same transform) through a ``DataLoader`` with
  ``collate_clips``, batch 8, 0/1/2 persistent worker processes (started and warmed up by one epoch before
  the rounds; the start-up time is printed apart). Each worker pins torch to 1 thread.

CPU time = this process (``time.process_time``) + the workers (``/proc/<pid>/schedstat``, nanoseconds).
Figures are medians over rounds. On a shared machine the wall-clock rates depend on the load (printed); the
CPU figures do not, so the goals are set on CPU where they can be: ``w=0`` at most 1.1x the CPU per clip of
``decode + transform`` (dataset + collate cost little), ``w=1``/``w=2`` at most 1.2x ``w=0`` (the worker
hand-over costs little); ``w=2`` at least 1.6x the clips/s of ``w=0`` applies only with 2 free cores.
"""
from __future__ import annotations

import argparse
import functools
import multiprocessing
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
def _init_worker(pids, worker_id: int) -> None:
    torch.set_num_threads(1)
    pids[worker_id] = os.getpid()


def _cpu_seconds(pids) -> float:
    """Seconds on CPU of processes ``pids``, from the scheduler's nanosecond counters."""
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/schedstat") as f:
            total += int(f.read().split()[0])
    return total / 1e9


class Loader:
    """One DataLoader kept for the whole run (persistent workers) and timed one epoch at a time."""

    def __init__(self, ds: ClipDataset, clips: List[tuple], workers: int):
        self.workers = workers
        self.pids = multiprocessing.Array("i", max(1, workers))  # written by each worker (fork: shared memory)
        self.loader = torch.utils.data.DataLoader(
            ds, batch_size=BATCH, sampler=clips, collate_fn=collate_clips, num_workers=workers,
            worker_init_fn=functools.partial(_init_worker, self.pids) if workers else None,
            persistent_workers=workers > 0)
        w0 = time.perf_counter()
        self.epoch()  # starts the workers; every worker's file indices and open files warm up
        self.startup = time.perf_counter() - w0

    def worker_cpu(self) -> float:
        return _cpu_seconds(self.pids[:self.workers])

    def epoch(self) -> int:
        n = 0
        for batch in self.loader:
            n += batch["clip"].shape[0] + batch["skipped"].numel()
        return n


def run(name: str, ds: ClipDataset, clips: List[tuple], loaders: Dict[int, Loader]):
    """(wall s, CPU s of all processes) to read ``clips`` the way ``name`` says."""
    loader = loaders[int(name[-1])] if name.startswith("DataLoader") else None
    workers_cpu = loader.worker_cpu if loader is not None else (lambda: 0.0)
    c0, k0, w0 = time.process_time(), workers_cpu(), time.perf_counter()
    if name.startswith("decode"):
        for v, s in clips:
            r = ds.manifest[v]
            frames = read_clip(r.path, s, T, size=short_side_size(r.height, r.width, SHORT))
            if name.endswith("transform"):
                ds.transform(frames)
    else:
        assert loader.epoch() == len(clips)
    return time.perf_counter() - w0, time.process_time() - c0 + workers_cpu() - k0


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clips", type=int, default=48, help="clips per round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds (figures are medians over them), >= 3")
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
        loaders = {w: Loader(ds, clips, w) for w in (0, 1, 2)}
        results: Dict[str, List[tuple]] = {k: [] for k in VARIANTS}
        for r in range(rounds):
            for name in VARIANTS[r % len(VARIANTS):] + VARIANTS[:r % len(VARIANTS)]:
                results[name].append(run(name, ds, clips, loaders))
        startup = {w: loaders[w].startup for w in loaders}
        del loaders
    load1 = os.getloadavg()
    med = {k: np.median(np.array(v), axis=0) for k, v in results.items()}  # wall, cpu (s per round)
    n = args.clips
    cpu = {k: 1e3 * m[1] / n for k, m in med.items()}
    rate = {k: n / m[0] for k, m in med.items()}
    print(f"{n} clips of {T} frames per round (4 videos 320x240 H.264 GOP 32, decoded at short side {SHORT}, "
          f"CleanTransform({CROP}, {SHORT})), batch {BATCH}, medians of {rounds} rounds; torch threads 1 "
          f"everywhere; load average {load0[0]:.2f} before, {load1[0]:.2f} after ({os.cpu_count()} cores)\n")
    print("| variant | clips/s (wall) | CPU ms per clip (all processes) | goal |")
    print("|---|---|---|---|")
    goals = {
        "DataLoader w=0": (cpu["DataLoader w=0"] / cpu["decode + transform"], "<=", 1.1, "x CPU of decode + transform"),
        "DataLoader w=1": (cpu["DataLoader w=1"] / cpu["DataLoader w=0"], "<=", 1.2, "x CPU of w=0"),
        "DataLoader w=2": (cpu["DataLoader w=2"] / cpu["DataLoader w=0"], "<=", 1.2, "x CPU of w=0"),
    }
    for k in VARIANTS:
        goal = ""
        if k in goals:
            r, op, g, what = goals[k]
            goal = f"{op} {g} {what}: {r:.2f} {'met' if r <= g else 'NOT met'}"
        if k == "DataLoader w=2":
            speed = rate[k] / rate["DataLoader w=0"]
            free = load1[0] < 0.5
            goal += (f"; >= 1.6 x clips/s of w=0 on 2 free cores: {speed:.2f} "
                     + ("met" if speed >= 1.6 else "NOT met") if free else
                     f"; clips/s vs w=0: {speed:.2f} (the 1.6x goal needs 2 free cores; load {load1[0]:.1f})")
        print(f"| {k} | {rate[k]:.1f} | {cpu[k]:.2f} | {goal} |")
    print(f"\nWorker start-up + first (warm-up) epoch: w=0 {startup[0]:.2f} s, w=1 {startup[1]:.2f} s, "
          f"w=2 {startup[2]:.2f} s")


if __name__ == "__main__":
    main()
