"""SGS benchmark: prints markdown tables, decides nothing (issue 4, "Benchmark").

(a) SGS forward+backward time as a share of the network's forward+backward (r3d18_a1 at 32x112^2, batch 8,
    when `build_backbone` is available; else a stand-in 3D CNN with the same res2 output shape);
(b) batch-wide bin dropping vs a per-sample Python loop at batch 32;
(c) GMACs and CPU inference time per clip (batch 1) of x3d_s and r3d18_a1 with / without SGS on a static,
    a slowly changing and a random-noise clip (needs `build_backbone`);
(d) the same on a GPU at batch 64 in fp32 / bf16 (skipped without CUDA).

Run from the repository root: `python benchmarks/sgs.py [--quick] [--threads N]`. CPU timings are medians
of the process's CPU time (wall time on a shared machine mostly measures the other jobs); read ratios.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, List, Optional

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout's package, not an installed one

from lightning_temporal.flops import count_gmacs  # noqa: E402
from lightning_temporal.models.sgs import SimilarityGuidedSampling, compact_bins  # noqa: E402


def _build_backbone() -> Optional[Callable[..., nn.Module]]:
    try:
        from lightning_temporal.models import build_backbone  # exported by the lead once backbones is merged
        return build_backbone
    except ImportError:
        pass
    try:
        from lightning_temporal.models.registry import build_backbone
        return build_backbone
    except ImportError:
        return None


# CPU time of this process (all its threads), not wall time: on a machine shared with other jobs, wall time
# mostly measures the others. On the GPU (part d) wall time after synchronisation is used instead.
TIMER = time.process_time


def timeit(fn: Callable[[], object], reps: int, warmup: int = 1) -> float:
    """Median seconds of `reps` calls of fn (after `warmup` calls), measured with TIMER."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        t0 = TIMER()
        fn()
        times.append(TIMER() - t0)
    return statistics.median(times)


def table(header: List[str], rows: List[List[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------------
class StandIn(nn.Module):
    """A 3D CNN with r3d18_a1's stem and res2 output (32 channels, T, H/4, W/4), then a few wider convs."""

    def __init__(self, sgs: Optional[nn.Module]):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv3d(3, 8, (5, 7, 7), stride=(1, 2, 2), padding=(2, 3, 3), bias=False), nn.BatchNorm3d(8),
            nn.ReLU(inplace=True), nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1)),
            nn.Conv3d(8, 32, (3, 1, 1), padding=(1, 0, 0), bias=False), nn.BatchNorm3d(32), nn.ReLU(inplace=True),
        )
        self.sgs = sgs
        self.rest = nn.Sequential(
            nn.Conv3d(32, 64, (1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1), bias=False), nn.BatchNorm3d(64),
            nn.ReLU(inplace=True),
            nn.Conv3d(64, 128, (1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1), bias=False), nn.BatchNorm3d(128),
            nn.ReLU(inplace=True),
            nn.Conv3d(128, 256, (3, 3, 3), stride=(1, 2, 2), padding=1, bias=False), nn.BatchNorm3d(256),
            nn.ReLU(inplace=True),
        )
        self.fc = nn.Linear(256, 10)

    def forward(self, x):
        x = self.stem(x)
        if self.sgs is not None:
            x, _ = self.sgs(x)
        return self.fc(self.rest(x).mean(dim=(2, 3, 4)))


# Random weights throughout: the default assignment ("ordered", whose min_change is in the units of a trained
# embedding) keeps one bin of every clip there, so these measurements use "interpolate", which keeps several.
RANDOM_WEIGHTS_SGS = {"after": "res2", "assignment": "interpolate"}


def bench_share(build, quick: bool) -> None:
    n, t, hw = (2, 16, 112) if quick else (8, 32, 112)
    print(f"\n## (a) SGS forward+backward share of the network's forward+backward ({n} x {t}x{hw}^2, train mode)\n")
    torch.manual_seed(0)
    clip = torch.randn(n, 3, t, hw, hw)
    if build is not None:
        name = "r3d18_a1"
        net = build(name, 10, sgs=RANDOM_WEIGHTS_SGS)
    else:
        name = "stand-in 3D CNN (build_backbone not available)"
        net = StandIn(SimilarityGuidedSampling(32))
    sgs = [m for m in net.modules() if isinstance(m, SimilarityGuidedSampling)][0]
    feats = {}
    hook = sgs.register_forward_hook(lambda m, i, o: feats.__setitem__("x", i[0].detach()))
    net.train()

    def net_step():
        net.zero_grad(set_to_none=True)
        net(clip).sum().backward()

    t_net = timeit(net_step, reps=1 if quick else 2)
    hook.remove()
    x = feats["x"].clone().requires_grad_(True)

    def sgs_step():
        out, _ = sgs(x)
        out.backward(torch.ones_like(out))

    t_sgs = timeit(sgs_step, reps=3 if quick else 5)
    rows = [[name, tuple(x.shape), f"{t_net * 1e3:.0f}", f"{t_sgs * 1e3:.1f}", f"{100 * t_sgs / t_net:.2f}%",
             int(sgs.last_num_bins.float().mean().round())]]
    print(table(["network", "SGS input [N,C,T,H,W]", "net fwd+bwd CPU ms", "SGS fwd+bwd CPU ms", "share (goal <= 3%)",
                 "mean B'"], rows))


# --------------------------------------------------------------------------------------------------------
def compact_bins_loop(weights):
    """Per-sample loop in the style of the authors' released code: for every sample, find its non-empty bins,
    move them to the front in place, zero the rest, then cut at the largest B'."""
    weights = weights.clone()
    m = weights.shape[0]
    active = weights.sum(dim=2)
    bmax = 0
    counts = []
    for n in range(m):
        kept = active[n].nonzero().view(-1)
        front = torch.arange(kept.shape[0])
        weights[n][front] = weights[n][kept]
        weights[n][front[-1] + 1:] = 0.0
        bmax = max(bmax, kept.shape[0])
        counts.append(kept.shape[0])
    counts = torch.tensor(counts)
    mask = torch.arange(bmax).unsqueeze(0) < counts.unsqueeze(1)
    return weights[:, :bmax], mask, counts


def compact_bins_lean_loop(weights):
    """A leaner per-sample loop (one nonzero and one indexed copy per sample), for reference."""
    m = weights.shape[0]
    keep = weights.amax(dim=-1) > 0
    idx = [keep[i].nonzero().flatten() for i in range(m)]
    counts = torch.tensor([len(i) for i in idx])
    bmax = int(counts.max())
    out = weights.new_zeros(m, bmax, weights.shape[-1])
    for i in range(m):
        out[i, : len(idx[i])] = weights[i, idx[i]]
    mask = torch.arange(bmax).unsqueeze(0) < counts.unsqueeze(1)
    return out, mask, counts


class LoopSGS(SimilarityGuidedSampling):
    drop_empty_bins = staticmethod(compact_bins_loop)


def bench_dropping(quick: bool) -> None:
    n, t = 32, 32
    print(f"\n## (b) dropping empty bins: batch-wide vs per-sample loop (batch {n}, T = B = {t})\n")
    torch.manual_seed(0)
    w = torch.rand(n, t, t)
    w = w * (torch.rand(n, t, 1) < 0.4)  # ~60% empty bins, a different B' per sample
    reps = 20 if quick else 300
    t_vec = timeit(lambda: compact_bins(w), reps)
    rows = []
    for label, fn in (("authors'-style loop", compact_bins_loop), ("lean loop", compact_bins_lean_loop)):
        assert all(torch.equal(p, q) for p, q in zip(compact_bins(w), fn(w))), f"{label} disagrees"
        t_loop = timeit(lambda: fn(w), reps)
        rows.append([f"compaction [32, 32, 32] vs {label}", f"{t_vec * 1e6:.0f}", f"{t_loop * 1e6:.0f}",
                     f"{t_loop / t_vec:.1f}x"])
    # the whole layer, eval mode, on res2-sized features of r3d18_a1 at 112^2
    x = torch.randn(n, 32, t, 14 if quick else 28, 14 if quick else 28)
    vec, loop = SimilarityGuidedSampling(32).eval(), LoopSGS(32).eval()
    loop.load_state_dict(vec.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(vec(x)[0], loop(x)[0])
        reps = 3 if quick else 10
        t_vec = timeit(lambda: vec(x), reps)
        t_loop = timeit(lambda: loop(x), reps)
    rows.append([f"whole SGS forward {list(x.shape)} vs authors'-style loop", f"{t_vec * 1e6:.0f}", f"{t_loop * 1e6:.0f}", f"{t_loop / t_vec:.2f}x"])
    print(table(["what", "batch-wide CPU us", "per-sample loop CPU us", "speed-up (goal >= 5x)"], rows))


# --------------------------------------------------------------------------------------------------------
def make_clips(t: int, hw: int):
    """static, slowly changing (a smooth pattern drifting 1 px / frame, brightness ramp), noise; [1,3,T,H,W]."""
    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.arange(hw + t, dtype=torch.float32), torch.arange(hw, dtype=torch.float32),
                            indexing="ij")
    pattern = torch.stack([torch.sin(xx / 9 + yy / 13), torch.cos(yy / 7), torch.sin((xx + yy) / 11)])
    static = pattern[:, :hw].unsqueeze(1).expand(3, t, hw, hw)
    slow = torch.stack([pattern[:, i : i + hw] * (1 + 0.01 * i) for i in range(t)], dim=1)
    noise = torch.randn(3, t, hw, hw, generator=g)
    return {"static": static.unsqueeze(0).contiguous(), "slow": slow.unsqueeze(0), "noise": noise.unsqueeze(0)}


def bench_gmacs(build, quick: bool) -> None:
    print("\n## (c) GMACs and CPU inference time per clip (batch 1, eval mode, random weights)\n")
    if build is None:
        print("skipped: lightning_temporal.models.build_backbone is not available on this branch "
              "(runs once the backbones branch is merged)")
        return
    setups = [("x3d_s", 13, 160), ("r3d18_a1", 32, 224)]
    if quick:
        setups = [("x3d_s", 13, 96), ("r3d18_a1", 16, 112)]
    rows = []
    for name, t, hw in setups:
        clips = make_clips(t, hw)
        torch.manual_seed(0)
        base = build(name, 400).eval()
        torch.manual_seed(0)
        with_sgs = build(name, 400, sgs=RANDOM_WEIGHTS_SGS).eval()
        sgs = [m for m in with_sgs.modules() if isinstance(m, SimilarityGuidedSampling)][0]
        for kind, clip in clips.items():
            res = {}
            for label, net in (("base", base), ("sgs", with_sgs)):
                gm = count_gmacs(net, clip)
                with torch.no_grad():
                    sec = timeit(lambda: net(clip), reps=1 if quick else 3)
                res[label] = (gm, sec)
            with torch.no_grad():
                with_sgs(clip)
            bprime = int(sgs.last_num_bins[0])
            (g0, s0), (g1, s1) = res["base"], res["sgs"]
            rows.append([name, f"{t}x{hw}^2", kind, f"{g0:.2f}", f"{g1:.2f}", f"{100 * (1 - g1 / g0):.0f}%",
                         f"{s0 * 1e3:.0f}", f"{s1 * 1e3:.0f}", f"{100 * (1 - s1 / s0):.0f}%", bprime])
    print(table(["model", "clip", "content", "GMACs", "GMACs +SGS", "fewer GMACs", "CPU ms", "CPU ms +SGS",
                 "less time", "B' after SGS"], rows))
    print("\n(goal on the static clip: >= 40% fewer GMACs and >= 30% less wall time)")


def _wall(fn, reps, warmup):
    global TIMER
    saved, TIMER = TIMER, time.perf_counter
    try:
        return timeit(fn, reps, warmup)
    finally:
        TIMER = saved


def bench_gpu() -> None:
    print("\n## (d) GPU, batch 64, fp32 / bf16\n")
    if not torch.cuda.is_available():
        print("skipped: no CUDA device in this run (no GPU was lent to this task)")
        return
    build = _build_backbone()
    if build is None:
        print("skipped: build_backbone is not available on this branch")
        return
    rows = []
    for name, t, hw in (("x3d_s", 13, 160), ("r3d18_a1", 32, 224)):
        clips = {k: v.expand(64, -1, -1, -1, -1).contiguous().cuda() for k, v in make_clips(t, hw).items()}
        for label, spec in (("base", None), ("sgs", RANDOM_WEIGHTS_SGS)):
            torch.manual_seed(0)
            net = build(name, 400, sgs=spec).cuda().eval()
            for dtype in (torch.float32, torch.bfloat16):
                for kind, clip in clips.items():
                    def run():
                        with torch.no_grad(), torch.autocast("cuda", dtype=dtype, enabled=dtype != torch.float32):
                            net(clip)
                        torch.cuda.synchronize()
                    sec = _wall(run, reps=5, warmup=2)
                    rows.append([name, label, str(dtype).replace("torch.", ""), kind, f"{sec * 1e3:.1f}",
                                 f"{64 / sec:.0f}"])
    print(table(["model", "variant", "dtype", "content", "ms / batch of 64", "clips / s"], rows))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    ap.add_argument("--parts", default="abcd", help="which parts to run, e.g. 'ab'")
    ap.add_argument("--threads", type=int, default=1,
                    help="CPU threads (default 1: stable CPU-time figures on a shared machine)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    build = _build_backbone()
    print(f"# SGS benchmark (torch {torch.__version__}, {torch.get_num_threads()} CPU thread(s), times are "
          f"process CPU time, medians{', quick sizes' if args.quick else ''})")
    if "a" in args.parts:
        bench_share(build, args.quick)
    if "b" in args.parts:
        bench_dropping(args.quick)
    if "c" in args.parts:
        bench_gmacs(build, args.quick)
    if "d" in args.parts:
        bench_gpu()


if __name__ == "__main__":
    main()
