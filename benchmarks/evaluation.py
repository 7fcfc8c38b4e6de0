"""Whole-video evaluation: one dense fully convolutional pass vs every clip position at a stride.

    python benchmarks/evaluation.py [--videos 16] [--frames 300] [--clip-len 16] [--train-epochs 8]

Prints a markdown table (no pass/fail): per-video time of the evaluation forward (and of decode + transform,
shared by both modes), the speed-up of dense over clips at stride F/4 (goal >= 4x), and the accuracy of both
modes with their agreement, for a simple3d model trained briefly with uniform clips on the synthetic data.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from lightning import Trainer, seed_everything  # noqa: E402

from lightning_temporal import TemporalDataModule, VideoClassifier, softmax_temporal_pool  # noqa: E402
from lightning_temporal.data.synthetic import ensure_dataset  # noqa: E402
from lightning_temporal.data.video_dataset import collate_videos  # noqa: E402


def _datamodule(paths, args, mode):
    return TemporalDataModule(train_manifest=paths["train"], val_manifest=paths["test"], clip_len=args.clip_len,
                              crop_size=56, short_side=64, mean=(0.5,) * 3, std=(0.25,) * 3, batch_size=16,
                              eval_mode=mode, eval_clip_stride=max(1, args.clip_len // 4), progress=False)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", type=int, default=16, help="test videos")
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--clip-len", type=int, default=16)
    ap.add_argument("--train-epochs", type=int, default=8)
    ap.add_argument("--ckpt", default=None, help="a VideoClassifier checkpoint (simple3d, 4 classes) to evaluate "
                    "instead of training one briefly, e.g. the quickstart's outputs/quickstart/.../last.ckpt")
    ap.add_argument("--root", default=os.path.join(tempfile.gettempdir(), "lt_eval_bench"))
    args = ap.parse_args(argv)
    seed_everything(0, verbose=False)
    paths = ensure_dataset(args.root, num_train=64, num_val=4, num_test=args.videos, min_frames=args.frames,
                           max_frames=args.frames, progress=False)
    model = VideoClassifier("simple3d", num_classes=4, gamma_p=1.0, report_gamma_p=())
    if args.ckpt:
        model = VideoClassifier.load_from_checkpoint(args.ckpt, map_location="cpu")
        args.train_epochs = 0
    elif args.train_epochs:
        Trainer(accelerator="cpu", max_epochs=args.train_epochs, logger=False, enable_checkpointing=False,
                enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0).fit(
            model, datamodule=_datamodule(paths, args, "clips"))
    model.eval()
    rows, preds = {}, {}
    for mode in ("clips", "dense"):
        dm = _datamodule(paths, args, mode)
        dm.setup("validate")
        ds = dm.datasets["val"]
        t_data = t_model = 0.0
        pred, labels, positions = [], [], 0
        for i in range(len(ds)):  # one video at a time: the evaluation unit
            t0 = time.perf_counter()
            batch = collate_videos([ds[i]])
            t1 = time.perf_counter()
            with torch.no_grad():
                scores, mask, _ = model.video_clip_scores(batch)
                pooled = softmax_temporal_pool(scores, 1.0, mask=mask)
            t2 = time.perf_counter()
            t_data, t_model = t_data + t1 - t0, t_model + t2 - t1
            pred.append(int(pooled.argmax(-1)))
            labels.append(int(batch["label"]))
            positions += int(mask.sum())
        n = len(ds)
        preds[mode] = pred
        rows[mode] = dict(data=t_data / n, model=t_model / n, acc=sum(p == y for p, y in zip(pred, labels)) / n,
                          positions=positions / n)
    agree = sum(a == b for a, b in zip(preds["clips"], preds["dense"])) / len(preds["dense"])
    print(f"{args.videos} test videos of {args.frames} frames at 64x64 (crop 56), clip_len {args.clip_len}, "
          f"clips at stride {max(1, args.clip_len // 4)}; "
          + (f"model {args.ckpt}; " if args.ckpt else f"simple3d trained {args.train_epochs} epochs (uniform); ")
          + f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs\n")
    print("| mode | scored positions / video | model s / video | decode+transform s / video | total s / video "
          "| video accuracy (gamma_p = 1) |")
    print("|---|---:|---:|---:|---:|---:|")
    for mode, r in rows.items():
        print(f"| {mode} | {r['positions']:.0f} | {r['model']:.3f} | {r['data']:.3f} | {r['model'] + r['data']:.3f} "
              f"| {r['acc']:.3f} |")
    c, d = rows["clips"], rows["dense"]
    print(f"\ndense speed-up over clips: model {c['model'] / d['model']:.2f}x, total "
          f"{(c['model'] + c['data']) / (d['model'] + d['data']):.2f}x (goal >= 4x); accuracy gap "
          f"{d['acc'] - c['acc']:+.3f}; predictions agree on {agree:.3f} of the videos")


if __name__ == "__main__":
    main()
