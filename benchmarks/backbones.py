"""Parameters and GMACs of every backbone against the published figures; optionally the GMACs with SGS
after res2 on a static clip (real data, batch 1: slower).

    python benchmarks/backbones.py [--sgs]

MACs = torch.utils.flop_counter total / 2 at batch 1, K = 400. Prints a table; decides nothing.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lightning_temporal.models.registry import build_backbone  # noqa: E402

# name, T x H x W, quoted params, quoted GMACs, source
ROWS = [
    ("r3d18", (16, 112, 112), 33_371_472, 40.70, "torchvision R3D-18"),
    ("r3d18_a1", (32, 224, 224), None, 18.06, "seed 002 Table A.1"),
    ("r3d50", (32, 224, 224), None, None, "seed 3DResNet-50 (no figure)"),
    ("slow_r50", (8, 256, 256), 32.45e6, 54.52, "PyTorchVideo slow_r50 8x8"),
    ("x3d_s", (13, 160, 160), 3.79e6, 1.96, "X3D paper Table 3"),
    ("x3d_m", (16, 224, 224), 3.79e6, 4.73, "X3D paper Table 3"),
    ("slowfast_r50", (32, 256, 256), 34.57e6, 65.71, "PyTorchVideo SlowFast 8x8 R50"),
    ("simple3d", (16, 32, 32), None, None, "quickstart (K=400 here)"),
]


def gmacs(model, x) -> float:
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        model(x)
    return fc.get_total_flops() / 2e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sgs", action="store_true", help="also count GMACs with SGS on a static clip (real run)")
    args = ap.parse_args()
    head = f"{'backbone':<13} {'input':<11} {'params':>11} {'quoted':>9} {'GMACs':>8} {'quoted':>7} {'diff':>7}"
    if args.sgs:
        head += f" {'+SGS static':>11} {'B_prime':>7} {'s':>5}"
    print(head + "  source")
    for name, shape, qp, qg, src in ROWS:
        with torch.device("meta"):
            m = build_backbone(name, 400).eval()
            x = torch.empty(1, 3, *shape)
        p = sum(q.numel() for q in m.parameters())
        g = gmacs(m, x)
        qps = "-" if qp is None else (f"{qp:,.0f}" if qp == int(qp) and qp % 10_000 else f"{qp / 1e6:.2f}M")
        diff = "-" if qg is None else f"{100 * (g / qg - 1):+.2f}%"
        line = (f"{name:<13} {'x'.join(map(str, shape)):<11} {p:>11,} {qps:>9} {g:>8.3f} "
                f"{'-' if qg is None else f'{qg:.2f}':>7} {diff:>7}")
        if args.sgs:
            torch.manual_seed(0)
            ms = build_backbone(name, 400, sgs={}).eval()
            clip = torch.rand(1, 3, 1, *shape[1:]).expand(1, 3, *shape).contiguous()
            t0 = time.perf_counter()
            gs = gmacs(ms, clip)
            tm = ms.temporal if not isinstance(ms.temporal, torch.nn.ModuleDict) else ms.temporal["fast"]
            line += f" {gs:>11.3f} {int(tm.last_num_bins[0]):>7} {time.perf_counter() - t0:>5.1f}"
        print(line + f"  {src}")


if __name__ == "__main__":
    main()
