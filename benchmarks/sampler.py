"""Benchmark of the pure sampling code (issue 3), printed as a markdown table.

Part 1 (here): a dataset of ``--videos`` videos of ``--frames`` frames (default 1,000,000 x 300, F = 16,
so N = 285 positions per video): time to compute one epoch's global plan (ClipSampler.epoch_plan) and to
apply one epoch of records (one per video) for every policy, and the table memory per clip position.

Part 2 (training overhead of clean scoring) needs the Lightning callback: see ``clean_scoring_overhead``.

    python benchmarks/sampler.py                      # full size (~3 GB of RAM)
    python benchmarks/sampler.py --videos 100000      # quicker

Wall-clock numbers depend on the machine; the benchmark never decides pass/fail. On a machine shared
with other jobs, ``--threads 1`` can be much faster than 2 threads: every parallel op then waits for its
second thread to get a time slice.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from lightning_temporal.sampling.phases import PhaseSchedule  # noqa: E402
from lightning_temporal.sampling.policies import (  # noqa: E402
    FlatFrameScores,
    PriorPolicy,
    ReinforcePolicy,
    StochasticSoftmaxPolicy,
    UniformPolicy,
)
from lightning_temporal.sampling.sampler import ClipSampler  # noqa: E402


def _time(fn, repeat: int) -> tuple[float, float]:
    """(wall s, CPU s of this process, all threads) of the fastest of ``repeat`` runs.

    CPU time is reported too because the machine may be shared: wall time then includes waiting for
    a core, CPU time does not (on 2 free cores the wall time is between CPU/2 and CPU).
    """
    best = (float("inf"), float("inf"))
    for _ in range(repeat):
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        best = min(best, (time.perf_counter() - t0, time.process_time() - c0))
    return best


def _bytes_per_position(tensors, positions: int) -> float:
    return sum(t.numel() * t.element_size() for t in tensors) / positions


def sampler_part1(videos: int, frames: int, clip_len: int, repeat: int, seed: int = 0) -> list[dict]:
    """Rows: policy, phase, plan time (s), update time (s), state bytes / position."""
    N = max(1, frames - clip_len + 1)
    lengths = torch.full((videos,), N, dtype=torch.int64)
    P = videos * N
    rows = []
    gen = torch.Generator().manual_seed(seed)
    score = torch.randn(videos, generator=gen)

    def plan_and_update(name, phase, policy, epoch, state_tensors, lengths=lengths):
        sampler = ClipSampler(lengths, policy, seed=seed)
        plan = {}

        def do_plan():
            plan["v"], plan["t"] = sampler.epoch_plan(epoch)

        t_plan = _time(do_plan, repeat)
        vid, st = plan["v"], plan["t"]
        t_upd = _time(lambda: policy.update(epoch, vid, st, score), repeat)
        rows.append({"policy": name, "phase": phase, "plan_s": t_plan, "update_s": t_upd,
                     "bytes_per_pos": _bytes_per_position(state_tensors(policy), int(lengths.sum()))})

    sched = PhaseSchedule(warmup_epochs=3, exploration_epochs=5)
    tss = StochasticSoftmaxPolicy(lengths, clip_len, gamma_s=1.0, schedule=sched, seed=seed)
    tss.table.values.normal_(generator=gen)  # a non-flat table, as after exploration
    tss_state = lambda p: [p.table.values, p.table.offsets, p.table.lengths, p.slot_orders, p.radius]  # noqa: E731
    plan_and_update("uniform", "-", UniformPolicy(lengths), 0, lambda p: [p.num_positions])
    plan_and_update("stochastic softmax", "exploration (hard fill)", tss, 3, tss_state)
    plan_and_update("stochastic softmax", "exploitation (Eq. S.2)", tss, 8, tss_state)
    del tss
    # Ragged lengths (N uniform in [N/2, 3N/2], same mean): the general segment path, no 2-D view.
    ragged = torch.randint(max(1, N // 2), N + N // 2 + 1, (videos,), generator=gen)
    tss = StochasticSoftmaxPolicy(ragged, clip_len, gamma_s=1.0, schedule=sched, seed=seed)
    tss.table.values.normal_(generator=gen)
    plan_and_update("stochastic softmax, ragged N", "exploration (hard fill)", tss, 3, tss_state, ragged)
    plan_and_update("stochastic softmax, ragged N", "exploitation (Eq. S.2)", tss, 8, tss_state, ragged)
    del tss

    t0 = time.perf_counter()
    frame_scores = FlatFrameScores(torch.rand(videos * frames, generator=gen),
                                   torch.full((videos,), frames, dtype=torch.int64))
    prior = PriorPolicy(frame_scores, clip_len, gamma_s=1.0)
    t_build = time.perf_counter() - t0
    del frame_scores
    plan_and_update("prior", f"(build from frame scores: {t_build:.2f} s)", prior, 0,
                    lambda p: [p.prior.values, p.prior.offsets, p.prior.lengths])
    del prior

    rf = ReinforcePolicy(lengths, lr=1.0, baseline_momentum=0.9)
    rf.theta.values.normal_(generator=gen)
    plan_and_update("reinforce", "-", rf, 0,
                    lambda p: [p.theta.values, p.theta.offsets, p.theta.lengths, p.baseline, p.seen])
    return rows


def clean_scoring_overhead(**kwargs) -> None:
    """Part 2: epoch time with the callback (clean scoring) vs uniform sampling on a small 3D CNN, next to the
    bound 1 + t(eval forward) / t(train step) measured in the same run (``benchmarks/clean_scoring.py``)."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from clean_scoring import clean_scoring_overhead as measure, print_table

    print()
    print_table(measure(**kwargs))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", type=int, default=1_000_000)
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--clip-len", type=int, default=16)
    ap.add_argument("--repeat", type=int, default=2, help="best of this many runs")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    ap.add_argument("--skip-training", action="store_true", help="skip part 2 (clean-scoring overhead)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    N = max(1, args.frames - args.clip_len + 1)
    print(f"{args.videos:,} videos x {args.frames} frames, F = {args.clip_len} -> N = {N} positions per video "
          f"({args.videos * N:,} positions); torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{os.cpu_count()} CPUs; best of {args.repeat}\n")
    rows = sampler_part1(args.videos, args.frames, args.clip_len, args.repeat)
    print("| policy | phase | epoch plan: wall s (CPU s) | apply one epoch of records: wall s (CPU s) "
          "| state bytes / position |")
    print("|---|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['policy']} | {r['phase']} | {r['plan_s'][0]:.3f} ({r['plan_s'][1]:.3f}) "
              f"| {r['update_s'][0]:.3f} ({r['update_s'][1]:.3f}) | {r['bytes_per_pos']:.3f} |")
    if not args.skip_training:
        clean_scoring_overhead()


if __name__ == "__main__":
    main()
