"""Benchmark of the pure sampling code against a minimal independent implementation, as a markdown table.

    python benchmarks/sampler.py                          # 1,000,000 videos x 300 frames (~5 GB of RAM)
    python benchmarks/sampler.py --videos 100000          # quicker

Part 1: ``--videos`` videos of ``--frames`` frames (F = 16, so N = 285 clip positions each): the time to compute
one epoch's global plan (``ClipSampler.epoch_plan``) and to apply one epoch of records (one per video, in plan
order) for every policy and phase, and the state memory per clip position. Where the math is simple enough to
write again in a few lines of plain torch (uniform plan; TSS exploration plan and hard fill; TSS exploitation
plan, i.e. one softmax draw per video, and the Eq. S.2 update), a **minimal independent implementation** of the
same math (equal N: the table as a [V, N] matrix, chunks of rows, ``cumsum`` + ``searchsorted``, gather /
``lerp`` / scatter) runs in the same rounds, the two alternating first, and the table gives package / minimal
(goal ~1.0x: the package is at the floor of its math); its results are checked against the package's (equal
tables; the same draws from the same generator, up to ties of the float64 prefix sums). Rows without a minimal
twin (ragged N, prior, REINFORCE) are reported for scale. CPU time (this process) beside wall time, medians of
``--rounds``, torch threads pinned (``--threads``, default 1), load average printed.

Part 2 (training overhead of clean scoring) is ``benchmarks/clean_scoring.py``'s table (``--skip-training``
to leave it out). ``--policies`` keeps only some rows of part 1 (e.g. ``uniform,tss``: the rows with a minimal
twin); ``--out PREFIX`` writes ``PREFIX.md`` (part 1's table and its settings) and ``PREFIX.json``. Wall-clock
numbers depend on the machine; the benchmark never decides pass/fail.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from typing import Callable, Dict, Optional, Sequence

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from measure import load_average, machine_line, pin_threads  # noqa: E402

from lightning_temporal.sampling.phases import PhaseSchedule  # noqa: E402
from lightning_temporal.sampling.policies import (  # noqa: E402
    FlatFrameScores,
    PriorPolicy,
    ReinforcePolicy,
    StochasticSoftmaxPolicy,
    UniformPolicy,
)
from lightning_temporal.sampling.sampler import ClipSampler, epoch_generator  # noqa: E402

GOAL = "~1.0x the minimal implementation"
#: the row groups of part 1: uniform; TSS (exploration, exploitation); TSS with ragged N; prior; REINFORCE
POLICIES = ("uniform", "tss", "ragged", "prior", "reinforce")
_ROWS_ELEMS = 1 << 20  # positions per chunk of the minimal implementations


# --------------------------------------------------------------------------------------------------------------
# Minimal independent implementations (equal N per video: the table is a [V, N] matrix)
# --------------------------------------------------------------------------------------------------------------
def minimal_uniform_plan(V: int, N: int, seed: int, epoch: int):
    g = epoch_generator(seed, epoch)
    order = torch.randperm(V, generator=g)
    u = torch.rand(V, generator=g, dtype=torch.float64)
    return order, (u * N).long().clamp_(max=N - 1)[order]


def minimal_exploration_plan(slot_orders: torch.Tensor, k: int, V: int, N: int, E: int, seed: int, epoch: int):
    g = epoch_generator(seed, epoch)
    order = torch.randperm(V, generator=g)
    return order, ((N - 1) * slot_orders[:, k].long() // (E - 1))[order]


def minimal_softmax_plan(w: torch.Tensor, gamma: float, seed: int, epoch: int):
    """t ~ softmax(gamma * w[v]) for every row v of w [V, N], by inverse CDF (one float64 uniform per video)."""
    V, N = w.shape
    g = epoch_generator(seed, epoch)
    order = torch.randperm(V, generator=g)
    u = torch.rand(V, generator=g, dtype=torch.float64)
    t = torch.empty(V, dtype=torch.int64)
    rows = max(1, _ROWS_ELEMS // N)
    for a in range(0, V, rows):
        x = w[a:a + rows]
        p = (x - x.amax(1, keepdim=True)).mul_(gamma).exp_()
        cdf = torch.cumsum(p, 1, dtype=torch.float64)
        t[a:a + rows] = torch.searchsorted(cdf, u[a:a + rows, None] * cdf[:, -1:], right=True)[:, 0]
    return order, t.clamp_(max=N - 1)[order]


def minimal_fill(values: torch.Tensor, N: int, vid, start, score, radius: int) -> None:
    """w[v, j] = f for j in [t - r, t + r] within the video (clamped duplicates write the same f)."""
    rel = torch.arange(-radius, radius + 1)
    rows = max(1, _ROWS_ELEMS // rel.numel())
    for a in range(0, vid.numel(), rows):
        v, t, f = vid[a:a + rows], start[a:a + rows], score[a:a + rows]
        pos = (t[:, None] + rel).clamp_(0, N - 1)
        values[v[:, None] * N + pos] = f[:, None].expand_as(pos)


def minimal_interpolate(values: torch.Tensor, N: int, F: int, vid, start, score) -> None:
    """Eq. S.2 for records of distinct videos: w[t + i] += ((F - |i|) / F) (f - w[t + i]) for |i| < F in range."""
    rel = torch.arange(-(F - 1), F)
    weight = (F - rel.abs()).float() / F
    rows = max(1, _ROWS_ELEMS // rel.numel())
    for a in range(0, vid.numel(), rows):
        v, t, f = vid[a:a + rows], start[a:a + rows], score[a:a + rows]
        pos = t[:, None] + rel
        ok = (pos >= 0) & (pos < N)
        idx = (v[:, None] * N + pos)[ok]
        values[idx] = torch.lerp(values[idx], f[:, None].expand_as(pos)[ok], weight.expand_as(pos)[ok])


# --------------------------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------------------------
def _time(fn: Callable[[], object]) -> tuple:
    c0, w0 = time.process_time(), time.perf_counter()
    fn()
    return time.process_time() - c0, time.perf_counter() - w0


def _compare(package: Callable[[], object], minimal: Optional[Callable[[], object]], rounds: int) -> Dict:
    """Alternate the two per round (the package first in even rounds); medians of CPU / wall and of the ratio."""
    pk, mn = [], []
    for r in range(rounds):
        if minimal is not None and r % 2:
            mn.append(_time(minimal))
        pk.append(_time(package))
        if minimal is not None and not r % 2:
            mn.append(_time(minimal))
    out = {"package": tuple(statistics.median(x[k] for x in pk) for k in (0, 1))}
    if minimal is not None:
        out["minimal"] = tuple(statistics.median(x[k] for x in mn) for k in (0, 1))
        out["ratio"] = tuple(statistics.median(p[k] / m[k] for p, m in zip(pk, mn)) for k in (0, 1))
    return out


def _bytes_per_position(tensors, positions: int) -> float:
    return sum(t.numel() * t.element_size() for t in tensors) / positions


def sampler_part1(videos: int, frames: int, clip_len: int, rounds: int, seed: int = 0,
                  policies: Sequence[str] = POLICIES) -> list[dict]:
    """Rows: policy, phase, {"plan", "update"} timings (package, minimal, ratio), state bytes / position, check.
    ``policies``: which rows (of :data:`POLICIES`)."""
    N = max(1, frames - clip_len + 1)
    lengths = torch.full((videos,), N, dtype=torch.int64)
    rows = []
    gen = torch.Generator().manual_seed(seed)
    score = torch.randn(videos, generator=gen)
    sched = PhaseSchedule(warmup_epochs=3, exploration_epochs=5)
    E = sched.exploration_epochs

    def row(name, phase, policy, epoch, state, minimal_plan=None, minimal_update=None, lengths=lengths):
        sampler = ClipSampler(lengths, policy, seed=seed)
        plan = sampler.epoch_plan(epoch)
        vid, st = plan
        check = ""
        if minimal_plan is not None:
            m_vid, m_st = minimal_plan()
            same = float((m_st == st).double().mean()) if torch.equal(m_vid, vid) else 0.0
            check = f"plans agree on {100 * same:.4f}% of videos"
        timing = {"plan": _compare(lambda: sampler.epoch_plan(epoch), minimal_plan, rounds)}
        upd = None
        if minimal_update is not None:
            table = policy.table.values
            before = table.clone()
            policy.update(epoch, vid, st, score[vid])
            mine = before.clone()
            minimal_update(mine, vid, st, score[vid])
            check += f"; tables after one update {'equal' if torch.equal(mine, table) else 'DIFFER'}"
            del before
            upd = lambda: minimal_update(mine, vid, st, score[vid])  # noqa: E731
        timing["update"] = _compare(lambda: policy.update(epoch, vid, st, score[vid]), upd, rounds)
        rows.append({"policy": name, "phase": phase, **timing, "check": check.lstrip("; "),
                     "bytes_per_pos": _bytes_per_position(state(policy), int(lengths.sum()))})

    unknown = set(policies) - set(POLICIES)
    if unknown:
        raise ValueError(f"policies {sorted(unknown)} are not rows of part 1; choose from {POLICIES}")
    tss_state = lambda p: [p.table.values, p.table.offsets, p.table.lengths, p.slot_orders, p.radius]  # noqa: E731
    if "uniform" in policies:
        row("uniform", "-", UniformPolicy(lengths), 0, lambda p: [p.num_positions],
            minimal_plan=lambda: minimal_uniform_plan(videos, N, seed, 0))
    if "tss" in policies:
        tss = StochasticSoftmaxPolicy(lengths, clip_len, gamma_s=1.0, schedule=sched, seed=seed)
        tss.table.values.normal_(generator=gen)  # a non-flat table, as after exploration
        r_fill = int(tss.radius[0])
        row("stochastic softmax", "exploration (hard fill)", tss, 3, tss_state,
            minimal_plan=lambda: minimal_exploration_plan(tss.slot_orders, 0, videos, N, E, seed, 3),
            minimal_update=lambda values, v, t, f: minimal_fill(values, N, v, t, f, r_fill))
        tss.table.values.normal_(generator=gen)
        row("stochastic softmax", "exploitation (Eq. S.2)", tss, 8, tss_state,
            minimal_plan=lambda: minimal_softmax_plan(tss.table.values.view(videos, N), 1.0, seed, 8),
            minimal_update=lambda values, v, t, f: minimal_interpolate(values, N, clip_len, v, t, f))
        del tss
    if "ragged" in policies:
        # Ragged lengths (N uniform in [N/2, 3N/2], same mean): the general segment path, no 2-D view.
        ragged = torch.randint(max(1, N // 2), N + N // 2 + 1, (videos,), generator=gen)
        tss = StochasticSoftmaxPolicy(ragged, clip_len, gamma_s=1.0, schedule=sched, seed=seed)
        tss.table.values.normal_(generator=gen)
        row("stochastic softmax, ragged N", "exploration (hard fill)", tss, 3, tss_state, lengths=ragged)
        row("stochastic softmax, ragged N", "exploitation (Eq. S.2)", tss, 8, tss_state, lengths=ragged)
        del tss
    if "prior" in policies:
        _prior_row(row, videos, frames, clip_len, gen)
    if "reinforce" in policies:
        rf = ReinforcePolicy(lengths, lr=1.0, baseline_momentum=0.9)
        rf.table.values.normal_(generator=gen)
        row("reinforce", "-", rf, 0, lambda p: [p.table.values, p.table.offsets, p.table.lengths, p.baseline,
                                                  p.seen])
    return rows


def _prior_row(row, videos: int, frames: int, clip_len: int, gen: torch.Generator) -> None:
    c0 = time.process_time()
    frame_scores = FlatFrameScores(torch.rand(videos * frames, generator=gen),
                                   torch.full((videos,), frames, dtype=torch.int64))
    prior = PriorPolicy(frame_scores, clip_len, gamma_s=1.0)
    t_build = time.process_time() - c0
    del frame_scores
    row("prior", f"(build from frame scores: {t_build:.2f} s CPU)", prior, 0,
        lambda p: [p.table.values, p.table.offsets, p.table.lengths])


def _cell(t: Dict, key: str) -> str:
    pc, pw = t["package"]
    s = f"{pc:.3f} / {pw:.3f}"
    if "minimal" in t:
        mc, mw = t["minimal"]
        rc, rw = t["ratio"]
        s += f" | {mc:.3f} / {mw:.3f} | **{rc:.2f}x** / {rw:.2f}x"
    else:
        s += " | - | -"
    return s


def part1_table(rows: list[dict]) -> list[str]:
    """Part 1 as markdown lines."""
    out = ["| policy | phase | plan: package CPU / wall s | minimal | package / minimal CPU / wall "
           "| update: package CPU / wall s | minimal | package / minimal CPU / wall | goal | state bytes / position "
           "| check |",
           "|---|---|---:|---:|---:|---:|---:|---:|---|---:|---|"]
    for r in rows:
        goal = GOAL if "minimal" in r["plan"] or "minimal" in r["update"] else "-"
        out.append(f"| {r['policy']} | {r['phase']} | {_cell(r['plan'], 'plan')} | {_cell(r['update'], 'update')} | "
                   f"{goal} | {r['bytes_per_pos']:.3f} | {r['check']} |")
    return out


def print_part1(rows: list[dict]) -> None:
    print("\n".join(part1_table(rows)))


def clean_scoring_overhead(**kwargs) -> None:
    """Part 2: ``benchmarks/clean_scoring.py``'s table (uniform vs TSS steps batch by batch, with the bound)."""
    from clean_scoring import clean_scoring_overhead as measure, print_table

    print()
    print_table(measure(**kwargs))


def main(argv=None) -> list:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", type=int, default=1_000_000)
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--clip-len", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=3, help="median of this many rounds")
    ap.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (pinned)")
    ap.add_argument("--policies", default=",".join(POLICIES), help=f"rows of part 1, of {','.join(POLICIES)}")
    ap.add_argument("--skip-training", action="store_true", help="skip part 2 (clean-scoring overhead)")
    ap.add_argument("--out", default=None, help="write PREFIX.md (part 1) and PREFIX.json")
    args = ap.parse_args(argv)
    pin_threads(args.threads)
    N = max(1, args.frames - args.clip_len + 1)
    head = [machine_line(), "",
            f"{args.videos:,} videos x {args.frames} frames, F = {args.clip_len} -> N = {N} positions per video "
            f"({args.videos * N:,} positions); medians of {args.rounds} rounds, package and minimal alternating", ""]
    print("\n".join(head))
    rows = sampler_part1(args.videos, args.frames, args.clip_len, args.rounds,
                         policies=[p for p in args.policies.split(",") if p])
    table = part1_table(rows)
    print("\n".join(table))
    after = load_average()
    if args.out:
        with open(args.out + ".md", "w") as f:
            f.write("# Epoch plan and table update vs a minimal implementation (benchmarks/sampler.py)\n\n"
                    + "\n".join(head + table + ["", f"{after} (after)"]) + "\n")
        with open(args.out + ".json", "w") as f:
            json.dump({"settings": {k: v for k, v in vars(args).items() if k != "out"}, "machine": head[0],
                       "load_after": after, "rows": rows}, f, indent=1)
    if not args.skip_training:
        clean_scoring_overhead(threads=args.threads)
    print(f"\n{load_average()} (after)")
    return rows


if __name__ == "__main__":
    main()
