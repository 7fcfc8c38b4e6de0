"""Training overhead of clean scoring (TSS) against uniform sampling, printed as markdown tables.

    python benchmarks/clean_scoring.py [--videos 96 --batch 8 --frames 16 --size 64 --rounds 5 --threads 1 --lightning]

A TSS training step is the clean scoring (``StochasticSoftmaxCallback``'s own scoring function: the clean clips
through ``score_clips`` in eval mode under ``no_grad``) followed by the training step; a uniform step is the
training step alone. The table times them **batch by batch**: for every batch of an epoch the uniform step and the
TSS step run back to back, in alternating order, each on its own copy of the model; an epoch is the sum over
its batches, and every round is one epoch of each. The bound ``1 + t(clean scoring) / t(uniform step)`` comes
from the parts measured inside those same steps, so a change of machine load moves the measurement and its
bound together. With ``--lightning`` it also runs the two through Lightning (``Trainer.fit`` of 2 epochs, the
second timed, the two fits alternating per round: a coarser interleave; the callback explores, so every batch
is scored), with the bound from the scoring time measured inside those epochs. Data are in memory (no decoding). Medians over ``--rounds``.
Wall-clock numbers depend on the machine; the benchmark never decides pass/fail.

``clean_scoring_overhead(**kwargs)`` returns the rows for ``benchmarks/sampler.py``'s part-2 hook.
"""
from __future__ import annotations

import argparse
import copy
import os
import sys
import time

import torch
from torch import nn
from torch.utils.data import DataLoader

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import lightning as L  # noqa: E402
from measure import Parts, load_average, machine_line, pin_threads  # noqa: E402

from lightning_temporal.callbacks.stochastic_softmax import StochasticSoftmaxCallback  # noqa: E402
from tests.tiny_lightning import TinyDataModule, TinyVideoModule, collate_tiny  # noqa: E402

GOAL = "ratio <= bound (the scoring forward is the only extra work)"


class Small3DCNN(TinyVideoModule):
    """conv3d 3->16->32->64 with BatchNorm, ReLU and strides, global pooling, linear head."""

    def __init__(self, num_classes: int = 3):
        super().__init__(num_classes=num_classes, lr=0.01)

        def block(cin, cout, stride):
            return nn.Sequential(nn.Conv3d(cin, cout, 3, stride=stride, padding=1, bias=False),
                                 nn.BatchNorm3d(cout), nn.ReLU(inplace=True))

        self.body = nn.Sequential(block(3, 16, (1, 2, 2)), block(16, 32, 2), block(32, 64, 2))
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x):  # N, 3, T, H, W -> N, K
        return self.fc(self.body(x).mean(dim=(2, 3, 4)))


def _datamodule(args) -> TinyDataModule:
    return TinyDataModule(num_videos=args.videos, min_frames=args.frames + 8, max_frames=args.frames * 2,
                          clip_len=args.frames, size=args.size, batch_size=args.batch, events=False)


def _train_step(model: nn.Module, opt: torch.optim.Optimizer, batch: dict) -> None:
    model.train()
    opt.zero_grad()
    nn.functional.cross_entropy(model(batch["clip"]), batch["label"]).backward()
    opt.step()


def batch_interleaved(args) -> Parts:
    """Per round (one epoch of each): uniform step and TSS step (clean scoring + step) batch by batch."""
    dm = _datamodule(args)
    dm.setup("fit")
    batches = list(DataLoader(dm.dataset, batch_size=args.batch, sampler=dm.clip_sampler, collate_fn=collate_tiny))
    torch.manual_seed(0)
    uniform = Small3DCNN()
    tss = copy.deepcopy(uniform)
    opt_u = torch.optim.SGD(uniform.parameters(), lr=0.01)
    opt_t = torch.optim.SGD(tss.parameters(), lr=0.01)
    score = StochasticSoftmaxCallback(log_every_epoch=False, track_videos=0).score_clean  # the callback's scoring

    def tss_step(batch, parts):
        with parts("tss: clean scoring"):
            score(None, tss, batch)
        with parts("tss: training step"):
            _train_step(tss, opt_t, batch)

    _train_step(uniform, opt_u, batches[0])  # warm-up: first calls allocate
    tss_step(batches[0], Parts())
    parts = Parts()
    for r in range(args.rounds):
        for b, batch in enumerate(batches):
            for variant in (("uniform", "tss") if (b + r) % 2 == 0 else ("tss", "uniform")):
                if variant == "uniform":
                    with parts("uniform step"):
                        _train_step(uniform, opt_u, batch)
                else:
                    with parts("tss step"):
                        tss_step(batch, parts)
        parts.end_round()
    return parts


class _StepClock(L.Callback):
    """Times, inside a fit, each epoch and the time between two points of every batch (CPU and wall)."""

    def __init__(self, parts: Parts, name: str, start: "_StepClock | None" = None):
        self.parts, self.name, self.partner = parts, name, start  # partner: the clock before the scoring callback
        self.start = start is None

    def on_train_epoch_start(self, trainer, pl_module):
        if self.start:
            self._epoch = (time.process_time(), time.perf_counter())

    def on_train_epoch_end(self, trainer, pl_module):
        if self.start and trainer.current_epoch == 1:  # epoch 0 of a fresh fit warms up: not timed
            c0, w0 = self._epoch
            self.parts.add(f"{self.name} epoch", time.process_time() - c0, time.perf_counter() - w0)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.current_epoch != 1:
            return
        if self.start:
            self._t = (time.process_time(), time.perf_counter())
        else:  # the clock after the scoring callback: the scoring time of this batch
            c0, w0 = self.partner._t
            self.parts.add(f"{self.name} scoring", time.process_time() - c0, time.perf_counter() - w0)


def lightning_epochs(args) -> Parts:
    """Per round: a 2-epoch ``Trainer.fit`` with uniform sampling and one with the callback scoring every batch;
    the second epoch of each is timed."""
    parts = Parts()
    for r in range(args.rounds + 1):  # round 0 warms up (first fits import and allocate) and is dropped
        for variant in (("uniform", "tss") if r % 2 == 0 else ("tss", "uniform")):
            clocks = [_StepClock(parts, variant)]
            if variant == "tss":  # warm-up 0: both epochs explore, every batch is scored
                clocks += [StochasticSoftmaxCallback(warmup_epochs=0, exploration_epochs=3, log_every_epoch=False,
                                                     track_videos=0), _StepClock(parts, variant, clocks[0])]
            L.seed_everything(0, verbose=False)
            trainer = L.Trainer(max_epochs=2, callbacks=clocks, accelerator="cpu", devices=1, logger=False,
                                enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
            trainer.fit(Small3DCNN(), datamodule=_datamodule(args))
        if r == 0:
            parts.cpu.clear()
            parts.wall.clear()
        else:
            parts.end_round()
    return parts


def _rows(parts: Parts, uniform: str, tss: str, scoring: str, label: str) -> list:
    """Medians over rounds (ratios and bounds: medians of the per-round values)."""
    rounds = parts.rounds
    out = []
    for k, what in ((0, "CPU"), (1, "wall")):
        ratios = sorted(r[tss][k] / r[uniform][k] for r in rounds)
        bounds = sorted(1 + r[scoring][k] / r[uniform][k] for r in rounds)
        mid = len(rounds) // 2
        med = {name: sorted(r[name][k] for r in rounds)[mid] for name in (uniform, tss, scoring)}
        rest = sorted((r[tss][k] - r[scoring][k]) / r[uniform][k] for r in rounds)  # TSS minus its scoring
        out.append({"setting": f"{label}, {what}", "uniform_s": med[uniform], "tss_s": med[tss],
                    "scoring_s": med[scoring], "ratio": ratios[mid], "bound": bounds[mid],
                    "ratio_range": (ratios[0], ratios[-1]), "rest": rest[mid]})
    return out


def clean_scoring_overhead(videos: int = 96, batch: int = 8, frames: int = 16, size: int = 64, rounds: int = 3,
                           threads: int = 1, lightning: bool = False) -> list[dict]:
    """Rows ``{"setting", "uniform_s", "tss_s", "scoring_s", "ratio", "bound", "ratio_range"}`` (epoch seconds,
    medians over rounds; ratio and bound are medians of the per-round values)."""
    pin_threads(threads)
    args = argparse.Namespace(videos=videos, batch=batch, frames=frames, size=size, rounds=rounds)
    rows = _rows(batch_interleaved(args), "uniform step", "tss step", "tss: clean scoring",
                 "batch by batch, same rounds")
    if lightning:
        rows += _rows(lightning_epochs(args), "uniform epoch", "tss epoch", "tss scoring",
                      "Trainer.fit epochs, fits alternating")
    return rows


def print_table(rows: list[dict]) -> None:
    """The markdown table of :func:`clean_scoring_overhead`'s rows."""
    print("| timing | uniform epoch s | TSS epoch s | of which clean scoring s | TSS / uniform (min-max) "
          "| bound 1 + scoring / uniform | (TSS - scoring) / uniform | goal |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        lo, hi = r["ratio_range"]
        print(f"| {r['setting']} | {r['uniform_s']:.3f} | {r['tss_s']:.3f} | {r['scoring_s']:.3f} | "
              f"{r['ratio']:.3f} ({lo:.3f}-{hi:.3f}) | {r['bound']:.3f} | {r['rest']:.3f} | {GOAL} |")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", type=int, default=96)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (pinned)")
    ap.add_argument("--lightning", action="store_true", help="also time whole Trainer.fit epochs")
    a = ap.parse_args(argv)
    pin_threads(a.threads)
    print(f"{machine_line()}\n")
    print(f"{a.videos} videos, batch {a.batch}, clips 3x{a.frames}x{a.size}x{a.size}, Small3DCNN; medians of "
          f"{a.rounds} rounds, each one epoch of both variants\n")
    print_table(clean_scoring_overhead(a.videos, a.batch, a.frames, a.size, a.rounds, a.threads,
                                       lightning=a.lightning))
    print(f"\n{load_average()} (after)")


if __name__ == "__main__":
    main()
