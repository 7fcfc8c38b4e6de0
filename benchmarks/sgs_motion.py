"""Why SGS loses a class defined only by the direction of a small object's motion (reproduction Table A.3).

    python benchmarks/sgs_motion.py                 # ~4 min on 2 cores
    python benchmarks/sgs_motion.py --epochs 3      # shorter

In-memory clips (T = 32, 28x28): one square moves up / down / left / right (the class) for 8 frames at
2 px per frame on a torus, one distractor square moves diagonally, plus pixel noise: the synthetic data's
event, without decoding. The quickstart CNN (``simple3d``) is trained with Adam for a few epochs:

* ``no SGS``: the plain CNN;
* ``SGS B=b``: SGS after ``--after`` (res2 as in the seed) with b bins, the released layer
  (``assignment="released"``: embedding from an average over H, W; bins ordered by the similarity coordinate);
  ``--assignment interpolate`` runs every SGS row with this package's assignment instead;
* ``identity bins``: the same SGS module and masking path, but with Psi = identity (every frame its own bin, in
  time order). It isolates the SGS plumbing (compaction, masks, re-zeroing) from the binning itself.
* ``SGS B=32, bins in time order``: the SGS bins re-sorted by the mean time of their frames;
* ``SGS B=32, dirac kernel``: every frame at full weight in its bin (the linear kernel weighs a frame by
  1 - its distance to the bin centre, so the frame with the largest coordinate keeps a 1e-7 weight);
* ``SGS blocks of 4, B=4``: SGS on consecutive blocks of 4 frames (how the seed runs it on SlowFast for SSv2);
* ``SGS B=32, weights detached``: no gradient from the bins into the embedding.

Printed: held-out accuracy per epoch and the mean number of kept bins B' per clip. What it shows (see
``benchmarks/results/README.md``): the plain CNN and the identity bins learn within 2-3 epochs; every SGS
setting stays far lower. The average over H, W is translation invariant, so frames that differ only by where the
square is look alike to SGS and are merged (about 32 frames -> 12-17 bins even at B = 32), with frames far apart
in time averaged together; the order of positions, which is the whole class here, is lost.

(The tables in ``benchmarks/results/sgs_motion_res*.md`` were measured before the layer had its ``assignment``
option, with the normalised linear kernel on the stage's output after its ReLU. ``benchmarks/sgs_tradeoff.py``
measures the motion variant again with both assignments.)
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

from lightning_temporal.models import sgs as sgs_lib  # noqa: E402
from lightning_temporal.models.registry import build_backbone  # noqa: E402

DIRECTIONS = torch.tensor([[-1, 0], [1, 0], [0, -1], [0, 1]])  # up, down, left, right (row, col)


def squares(centres: torch.Tensor, size: int, half: int = 3) -> torch.Tensor:
    """Masks [N, T, S, S] of squares of side 2*half centred at ``centres`` [N, T, 2] on a torus."""
    grid = torch.arange(size)
    d_r = (grid.view(1, 1, -1) - centres[..., :1]).remainder(size)  # [N, T, S]
    d_c = (grid.view(1, 1, -1) - centres[..., 1:]).remainder(size)
    in_r = (d_r < half) | (d_r >= size - half)
    in_c = (d_c < half) | (d_c >= size - half)
    return in_r.unsqueeze(-1) & in_c.unsqueeze(-2)


def make_clips(n: int, generator: torch.Generator, frames: int = 32, size: int = 28, event: int = 8):
    """Clips [n, 3, T, S, S] (normalised) and labels [n]; every tensor op is batched over clips."""
    labels = torch.randint(0, 4, (n,), generator=generator)
    t = torch.arange(frames).view(1, -1, 1).float()
    start = torch.randint(0, frames - event, (n, 1, 1), generator=generator).float()
    progress = (t - start).clamp(0, event) * 2.0  # pixels travelled by frame t
    obj = torch.randint(0, size, (n, 1, 2), generator=generator).float() + progress * DIRECTIONS[labels].view(n, 1, 2)
    distractor = torch.randint(0, size, (n, 1, 2), generator=generator).float() + t * 0.7
    x = torch.rand(n, frames, size, size, generator=generator) * 0.2
    x = torch.where(squares(obj.round().long(), size) | squares(distractor.round().long(), size),
                    torch.full_like(x, 0.9), x)
    return ((x - 0.5) / 0.25).unsqueeze(1).expand(-1, 3, -1, -1, -1).contiguous(), labels


class _IdentityBins(sgs_lib.SimilarityGuidedSampling):
    def weights(self, x):
        n, t = x.shape[0], x.shape[2]
        return self.drop_empty_bins(torch.eye(t, dtype=x.dtype, device=x.device).expand(n, t, t).contiguous())


class _DetachedBins(sgs_lib.SimilarityGuidedSampling):
    def weights(self, x):
        w, mask, counts = super().weights(x)
        return w.detach(), mask, counts


def _time_ordered(weights: torch.Tensor):
    """compact_bins after sorting the bins by the mean time of their frames (empty bins last)."""
    t = torch.arange(weights.shape[-1], dtype=weights.dtype, device=weights.device)
    centre = (weights * t).sum(-1) / weights.sum(-1).clamp_min(1e-12)
    centre = torch.where(weights.amax(-1) > 0, centre, torch.full_like(centre, float("inf")))
    order = centre.argsort(dim=1, stable=True)
    return sgs_lib.compact_bins(weights.gather(1, order.unsqueeze(-1).expand_as(weights)))


def build(kind: str, after: str, bins: int, assignment: str = "released"):
    if kind == "none":
        return build_backbone("simple3d", 4)
    # the identity control must compute the plain CNN, so the convs before it keep their zero temporal padding
    extra = {"dirac": {"kernel": "dirac", "assignment": "released"}, "block4": {"block_size": 4},
             "identity": {"temporal_padding": "zeros"}}.get(kind, {})
    base = dict(sgs_lib.RELEASED_CONFIG) if assignment == "released" else {"assignment": assignment}
    model = build_backbone("simple3d", 4, sgs={**base, "after": after, "num_bins": bins, **extra})
    if kind == "identity":
        model.temporal.__class__ = _IdentityBins
    elif kind == "time":
        model.temporal.drop_empty_bins = _time_ordered  # instance attribute: this model only
    elif kind == "detach":
        model.temporal.__class__ = _DetachedBins
    return model


def train_eval(model, train, test, epochs: int, batch: int = 16, lr: float = 1e-3, seed: int = 0):
    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    (xtr, ytr), (xte, yte) = train, test
    accs, bprime = [], []
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(len(ytr)).split(batch):
            loss = F.cross_entropy(model(xtr[idx]), ytr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            accs.append(float((model(xte).argmax(-1) == yte).float().mean()))
        temporal = getattr(model, "temporal", None)
        bprime.append(float(temporal.last_num_bins.float().mean()) if temporal is not None else float(xte.shape[2]))
    return accs, bprime


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--train", type=int, default=256)
    ap.add_argument("--test", type=int, default=128)
    ap.add_argument("--after", default="res2", help="stage SGS follows (res2 as in the seed, or res3)")
    ap.add_argument("--assignment", default="released", choices=sgs_lib.ASSIGNMENTS,
                    help="SGS assignment of the SGS rows (the dirac row is always released)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    train, test = make_clips(args.train, g), make_clips(args.test, g)
    runs = [("no SGS", "none", 32), ("identity bins (SGS plumbing, Psi = I)", "identity", 32),
            ("SGS B=32", "sgs", 32), ("SGS B=8", "sgs", 8), ("SGS B=32, bins in time order", "time", 32),
            ("SGS B=32, dirac kernel", "dirac", 32), ("SGS blocks of 4, B=4", "block4", 4),
            ("SGS B=32, weights detached", "detach", 32)]
    print(f"SGS after {args.after}; held-out top-1 % per epoch ({args.train} train / {args.test} test clips, "
          f"T = 32, chance 25 %)\n")
    print("| model | " + " | ".join(f"ep {e + 1}" for e in range(args.epochs)) + " | B' (last epoch) | s |")
    print("|---|" + "---|" * args.epochs + "---|---|")
    for label, kind, bins in runs:
        torch.manual_seed(0)
        model = build(kind, args.after, bins, args.assignment)
        t0 = time.perf_counter()
        accs, bprime = train_eval(model, train, test, args.epochs)
        print(f"| {label} | " + " | ".join(f"{100 * a:.1f}" for a in accs)
              + f" | {bprime[-1]:.1f} | {time.perf_counter() - t0:.0f} |", flush=True)


if __name__ == "__main__":
    main()
