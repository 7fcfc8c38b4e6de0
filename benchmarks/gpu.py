"""GPU benchmark, one prepared script: training throughput, TSS overhead and 2-GPU DDP. Markdown tables.

    python benchmarks/gpu.py                    # on a machine with 1 or 2 CUDA GPUs
    python benchmarks/gpu.py --smoke            # a tiny CPU run of every part, end to end (what the test runs)

1. Training clips/s of ``r3d18_a1`` and ``x3d_s``, each without and with SGS (after res2, the package's
   defaults), under bf16 autocast: SGD steps on random clips already on the device (no decoding: the model's
   throughput), the four variants round-robin step by step, ``torch.cuda.synchronize`` around every step;
   median step time over ``--rounds`` x ``--steps``.
2. TSS epoch overhead vs its bound on ``r3d18_a1``: for every batch the uniform training step and the TSS step
   (the callback's own clean scoring, then the training step) back to back in alternating order; bound
   ``1 + t(scoring) / t(uniform step)`` from the parts measured in the same steps.
3. DDP over 2 GPUs (NCCL, ``Trainer(strategy="ddp_spawn", precision="bf16-mixed")``): ``r3d18_a1`` trained with
   ``StochasticSoftmaxCallback`` for warm-up, exploration and exploitation epochs on in-memory clips; every rank
   gathers all ranks' epoch times and score tables and prints the same table, with whether the tables are
   identical on every rank (they must be). Skipped, saying so, with fewer than 2 GPUs; ``--smoke`` runs it on
   CPU with 2 gloo processes instead.

Every table prints CPU time (this process) beside wall time, the goal beside each figure, the pinned thread
count and the load average. The benchmark never decides pass/fail on time.
"""
from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import lightning as L  # noqa: E402
from measure import Parts, load_average, machine_line, pin_threads  # noqa: E402

from lightning_temporal import StochasticSoftmaxCallback, VideoClassifier  # noqa: E402
from tests.tiny_lightning import TinyDataModule  # noqa: E402

VARIANTS = [("r3d18_a1", False), ("r3d18_a1", True), ("x3d_s", False), ("x3d_s", True)]
NUM_CLASSES = 16


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _settings(args) -> dict:
    if args.smoke:
        return dict(batch=2, clip_len=8, size=32, steps=1, rounds=3, ddp_videos=8, ddp_epochs=4)
    return dict(batch=args.batch, clip_len=args.clip_len, size=args.size, steps=args.steps, rounds=args.rounds,
                ddp_videos=args.ddp_videos, ddp_epochs=4)


def _model(name: str, sgs: bool) -> VideoClassifier:
    return VideoClassifier(name, num_classes=NUM_CLASSES, sgs={} if sgs else None)


def _train_step(model: nn.Module, opt, clips, labels, device) -> None:
    model.train()
    opt.zero_grad(set_to_none=True)
    with torch.autocast(device.type, dtype=torch.bfloat16):
        loss = nn.functional.cross_entropy(model(clips).float(), labels)
    loss.backward()
    opt.step()


def _timed(parts: Parts, name: str, device, fn) -> None:
    _sync(device)
    with parts(name):
        fn()
        _sync(device)


def throughput(s: dict, device: torch.device) -> list:
    """Rows per variant: median step CPU / wall seconds and clips/s."""
    torch.manual_seed(0)
    clips = torch.randn(s["batch"], 3, s["clip_len"], s["size"], s["size"], device=device)
    labels = torch.randint(0, NUM_CLASSES, (s["batch"],), device=device)
    runs = {}
    for name, sgs in VARIANTS:
        model = _model(name, sgs).to(device)
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        _train_step(model, opt, clips, labels, device)  # warm-up: kernels, allocator
        runs[(name, sgs)] = (model, opt)
    parts = Parts()
    for r in range(s["rounds"]):
        for k in range(s["steps"]):
            shift = (r * s["steps"] + k) % len(VARIANTS)
            for name, sgs in VARIANTS[shift:] + VARIANTS[:shift]:
                model, opt = runs[(name, sgs)]
                _timed(parts, f"{name} {sgs}", device, lambda: _train_step(model, opt, clips, labels, device))
        parts.end_round()
    cpu, wall = parts.median_cpu(), parts.median_wall()
    rows = []
    for name, sgs in VARIANTS:
        key = f"{name} {sgs}"
        rows.append({"backbone": name, "sgs": sgs, "cpu": cpu[key] / s["steps"], "wall": wall[key] / s["steps"],
                     "clips_s": s["batch"] * s["steps"] / wall[key]})
    return rows


def tss_overhead(s: dict, device: torch.device) -> dict:
    """Uniform step vs TSS step (clean scoring + step), batch by batch, on r3d18_a1 under bf16 autocast."""
    torch.manual_seed(0)
    batches = [{"clean": torch.randn(s["batch"], 3, s["clip_len"], s["size"], s["size"], device=device),
                "clip": torch.randn(s["batch"], 3, s["clip_len"], s["size"], s["size"], device=device),
                "label": torch.randint(0, NUM_CLASSES, (s["batch"],), device=device)} for _ in range(s["steps"])]
    uniform = _model("r3d18_a1", False).to(device)
    tss = copy.deepcopy(uniform)
    opt_u = torch.optim.SGD(uniform.parameters(), lr=0.01, momentum=0.9)
    opt_t = torch.optim.SGD(tss.parameters(), lr=0.01, momentum=0.9)
    score = StochasticSoftmaxCallback(log_every_epoch=False, track_videos=0).score_clean  # the callback's scoring

    def scoring(batch):
        with torch.autocast(device.type, dtype=torch.bfloat16):  # what Lightning's bf16 precision plugin does
            score(None, tss, batch)

    _train_step(uniform, opt_u, batches[0]["clip"], batches[0]["label"], device)
    scoring(batches[0])
    _train_step(tss, opt_t, batches[0]["clip"], batches[0]["label"], device)
    parts = Parts()
    for r in range(s["rounds"]):
        for b, batch in enumerate(batches):
            for variant in (("uniform", "tss") if (b + r) % 2 == 0 else ("tss", "uniform")):
                if variant == "uniform":
                    _timed(parts, "uniform", device,
                           lambda: _train_step(uniform, opt_u, batch["clip"], batch["label"], device))
                else:
                    _sync(device)
                    with parts("tss"):
                        _timed(parts, "scoring", device, lambda: scoring(batch))
                        _timed(parts, "tss step", device,
                               lambda: _train_step(tss, opt_t, batch["clip"], batch["label"], device))
        parts.end_round()
    out = {}
    for k, what in ((0, "cpu"), (1, "wall")):
        out[what] = {
            "uniform": statistics.median(r["uniform"][k] for r in parts.rounds),
            "tss": statistics.median(r["tss"][k] for r in parts.rounds),
            "ratio": statistics.median(r["tss"][k] / r["uniform"][k] for r in parts.rounds),
            "bound": statistics.median(1 + r["scoring"][k] / r["uniform"][k] for r in parts.rounds)}
    return out


class _EpochClock(L.Callback):
    """Per-epoch CPU / wall time of this rank; at the end of fit every rank gathers every rank's times and
    score table and prints the same table."""

    def __init__(self, batch: int, title: str):
        self.batch, self.title, self.times = batch, title, []

    def on_train_epoch_start(self, trainer, pl_module):
        self._t = (time.process_time(), time.perf_counter())

    def on_train_epoch_end(self, trainer, pl_module):
        c0, w0 = self._t
        self.times.append((time.process_time() - c0, time.perf_counter() - w0, trainer.num_training_batches))

    def on_fit_end(self, trainer, pl_module):
        tss = next(cb for cb in trainer.callbacks if isinstance(cb, StochasticSoftmaxCallback))
        table = tss.policy.table.values.to(pl_module.device)
        times = torch.tensor(self.times, dtype=torch.float64, device=pl_module.device)
        all_times = trainer.strategy.all_gather(times)  # world, epochs, 3 (no world dim on one process)
        all_tables = trainer.strategy.all_gather(table)  # world, positions
        if trainer.world_size == 1:
            all_times, all_tables = all_times[None], all_tables[None]
        identical = bool((all_tables == all_tables[0]).all())
        world, rank = trainer.world_size, trainer.global_rank
        lines = [f"rank {rank} of {world}: {self.title}", "",
                 "| epoch | phase | " + " | ".join(f"rank {r} CPU / wall s" for r in range(world))
                 + " | clips/s (all ranks, slowest rank's wall) | goal |",
                 "|---|---|" + "---:|" * world + "---:|---|"]
        for e in range(all_times.shape[1]):
            cells = " | ".join(f"{float(all_times[r, e, 0]):.2f} / {float(all_times[r, e, 1]):.2f}"
                               for r in range(world))
            clips = world * self.batch * int(all_times[0, e, 2]) / float(all_times[:, e, 1].max())
            lines.append(f"| {e} | {tss.phase(e).value} | {cells} | {clips:.1f} | - |")
        lines += ["", f"score tables identical on all {world} ranks: {identical} (goal: True); table checksum "
                  f"{float(table.double().sum()):.6f}, {int((table != 0).sum())} of {table.numel()} positions "
                  "written"]
        print("\n".join(lines) + "\n", flush=True)


def ddp_run(s: dict, smoke: bool, devices: int = 2) -> None:
    """DDP fit with the callback on ``devices`` processes (``ddp_spawn``; one process: no spawn); every rank prints
    the gathered table (see ``_EpochClock``)."""
    if smoke:
        accelerator, precision, title = "cpu", "32-true", f"SMOKE: {devices} CPU process(es), gloo, float32"
    else:
        accelerator, precision, title = "gpu", "bf16-mixed", f"{devices} GPUs, NCCL, bf16-mixed"
    L.seed_everything(0, verbose=False)
    dm = TinyDataModule(num_videos=s["ddp_videos"], min_frames=s["clip_len"] + 8, max_frames=2 * s["clip_len"],
                        clip_len=s["clip_len"], size=s["size"], num_classes=NUM_CLASSES, batch_size=s["batch"])
    callbacks = [StochasticSoftmaxCallback(gamma_s=1.0, warmup_epochs=1, exploration_epochs=2, log_every_epoch=False,
                                           track_videos=0),
                 _EpochClock(s["batch"], f"{title}, r3d18_a1 + StochasticSoftmaxCallback, batch {s['batch']} "
                             f"per rank, clips 3x{s['clip_len']}x{s['size']}x{s['size']}")]
    trainer = L.Trainer(accelerator=accelerator, devices=devices, strategy="ddp_spawn" if devices > 1 else "auto",
                        precision=precision,
                        max_epochs=s["ddp_epochs"], callbacks=callbacks, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                        limit_val_batches=0)
    trainer.fit(VideoClassifier("r3d18_a1", num_classes=NUM_CLASSES), datamodule=dm)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="tiny CPU run of every part (DDP: 2 gloo processes)")
    ap.add_argument("--batch", type=int, default=16, help="clips per step (per GPU)")
    ap.add_argument("--clip-len", type=int, default=16)
    ap.add_argument("--size", type=int, default=112)
    ap.add_argument("--steps", type=int, default=10, help="steps per variant and round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--ddp-videos", type=int, default=256, help="in-memory videos of the DDP run")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (pinned)")
    ap.add_argument("--skip-ddp", action="store_true")
    args = ap.parse_args(argv)
    pin_threads(args.threads)
    s = _settings(args)
    gpus = torch.cuda.device_count()
    if args.smoke:
        device = torch.device("cpu")
    elif gpus == 0:
        ap.error("no CUDA GPU found; run with --smoke for a CPU check of the script")
    else:
        device = torch.device("cuda", 0)
        torch.backends.cudnn.benchmark = True
    name = "CPU (smoke)" if device.type == "cpu" else torch.cuda.get_device_name(device)
    print(f"{machine_line()}; device {name}, {gpus} CUDA GPU(s)\n")
    print(f"Table 1: training throughput, bf16 autocast, batch {s['batch']}, clips 3x{s['clip_len']}x{s['size']}x"
          f"{s['size']}, random clips on the device; medians of {s['rounds']} rounds x {s['steps']} steps, the "
          "variants round-robin step by step\n")
    print("| backbone | SGS | step CPU / wall ms | clips/s | goal |")
    print("|---|---|---:|---:|---|")
    for r in throughput(s, device):
        goal = "higher than without SGS (fewer GMACs after res2)" if r["sgs"] else "reference"
        print(f"| {r['backbone']} | {'yes' if r['sgs'] else 'no'} | {r['cpu'] * 1e3:.1f} / {r['wall'] * 1e3:.1f} "
              f"| {r['clips_s']:.1f} | {goal} |")
    t = tss_overhead(s, device)
    print(f"\nTable 2: TSS epoch overhead, r3d18_a1, batch by batch in alternating order, medians of {s['rounds']} "
          f"rounds of {s['steps']} batches\n")
    print("| time | uniform epoch s | TSS epoch s | TSS / uniform | bound 1 + scoring / uniform | goal |")
    print("|---|---:|---:|---:|---:|---|")
    for what in ("cpu", "wall"):
        x = t[what]
        print(f"| {what} | {x['uniform']:.3f} | {x['tss']:.3f} | {x['ratio']:.3f} | {x['bound']:.3f} | "
              "ratio <= bound |")
    print(f"\n{load_average()} (after tables 1-2)\n", flush=True)
    if args.skip_ddp:
        print("Table 3 (DDP): skipped (--skip-ddp)")
    elif not args.smoke and gpus < 2:
        print(f"Table 3 (DDP over 2 GPUs, NCCL): skipped, this machine has {gpus} CUDA GPU(s); it needs 2")
    else:
        print("Table 3: DDP, printed by every rank\n", flush=True)
        ddp_run(s, args.smoke)


if __name__ == "__main__":
    main()
