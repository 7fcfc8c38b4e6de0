"""Whole-video evaluation, dense vs clip-wise: where the time goes, end to end, and accuracy. Markdown tables.

    python benchmarks/evaluation.py [--videos 16 --frames 300 --rounds 3 --threads 1 --workers 1]
    python benchmarks/evaluation.py --ckpt outputs/quickstart/logs/version_0/checkpoints/last.ckpt \\
        --config recipes/quickstart.yaml          # adds the accuracy of both modes on the recipe's test videos

What is compared (both are this package's own evaluation modes, same model, same decoded videos):

* **clip-wise** (``data.eval_mode: clips``): the clips starting every F/4 frames plus the last position, each
  a separate F-frame forward pass (``eval_chunk`` clips per batch), read as views of the one decoded and
  transformed video (no per-clip decode, no per-clip transform).
* **dense** (``data.eval_mode: dense``): one forward pass over all frames; the head pools the features over
  each clip's window, which gives a clip score for every start (stride 1) from that one pass.

Table 1 times the parts per video (decode at the evaluation size, clean transform, model, pooling at every
gamma_p), in this process, video by video with the two modes alternating first. Table 2 times the package's
data path end to end: ``VideoDataset`` + ``collate_videos`` + ``VideoClassifier.video_clip_scores`` + pooling,
(a) in this process (video by video, modes alternating), (b) through a ``DataLoader`` with ``--workers``
workers that overlap decoding with the model (one pass over the videos per mode, alternating, per round;
CPU = this process + its workers). Medians over ``--rounds``. Timings use an untrained ``simple3d`` (or
``--ckpt``'s weights): the speed does not depend on the weights. Table 3 profiles the dense model part
(``torch.profiler``, self CPU by operator group, and the convolutions' GMACs per second) and states what the
goal (dense >= 4x clip-wise end to end, in process) would leave the model: the clip-wise CPU per video / 4 minus
the shared decode + transform. ``--out PREFIX`` writes ``PREFIX.md`` (the printed tables) and ``PREFIX.json``.
Wall-clock numbers depend on the machine and its load; the benchmark never decides pass/fail.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import av
import numpy as np
import torch
from av.video.reformatter import VideoReformatter
from torch.utils.data import DataLoader

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from measure import Parts, children_cpu, load_average, machine_line, pin_threads  # noqa: E402

from lightning_temporal import TemporalDataModule, VideoClassifier, count_gmacs, softmax_temporal_pool  # noqa: E402
from lightning_temporal.data.synthetic import ensure_dataset  # noqa: E402
from lightning_temporal.data.video_dataset import collate_videos  # noqa: E402

MODES = ("clips", "dense")
GAMMAS = (1.0, 0.0, 1e6)


def _datasets(args):
    paths = ensure_dataset(args.root, num_train=4, num_val=4, num_test=args.videos, size=args.size,
                           min_frames=args.frames, max_frames=args.frames, progress=False)
    out = {}
    for mode in MODES:
        dm = TemporalDataModule(train_manifest=paths["train"], test_manifest=paths["test"], clip_len=args.clip_len,
                                crop_size=args.crop, short_side=args.size, mean=(0.5,) * 3, std=(0.25,) * 3,
                                eval_mode=mode, eval_clip_stride=max(1, args.clip_len // 4), progress=False)
        dm.setup("test")
        out[mode] = dm.datasets["test"]
    return out


def _minimal_decode(path: str) -> np.ndarray:
    """The decoder's floor: a bare PyAV decode of every frame, one thread, one RGB conversion context."""
    rgb = VideoReformatter()
    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_count = 1
        return np.stack([rgb.reformat(f, format="rgb24", threads=1).to_ndarray() for f in container.decode(stream)])


def _pool(model, batch):
    """Scores of a batch pooled at every gamma_p (one forward pass): predicted class per gamma, [G, V]."""
    with torch.no_grad():
        scores, mask, _ = model.video_clip_scores(batch)
        gammas = torch.tensor(GAMMAS).view(-1, 1, 1, 1)
        return softmax_temporal_pool(scores, gammas, mask=mask).argmax(-1), int(mask.sum())


def parts_table(model, datasets, args) -> Parts:
    """Per-part costs, video by video; decode and transform are shared by the two modes (done once)."""
    parts = Parts()
    shared = datasets["clips"]
    for r in range(args.rounds):
        for i in range(len(shared)):
            with parts("decode"):
                frames = shared.decode(i)
            with parts("floor"):
                _minimal_decode(shared.manifest[i].path)
            with parts("transform"):
                video = shared.transform(frames)
            order = MODES if (i + r) % 2 == 0 else MODES[::-1]
            for mode in order:
                item = {"label": 0, "video_idx": i, "num_frames": video.shape[1], "video": video,
                        "clip_len": shared.clip_len, "stride": shared.stride}
                if mode == "clips":
                    item["starts"] = shared.clip_starts(i)
                batch = collate_videos([item])
                with torch.no_grad(), parts(f"model {mode}"):
                    scores, mask, _ = model.video_clip_scores(batch)
                with parts(f"pool {mode}"):
                    softmax_temporal_pool(scores, torch.tensor(GAMMAS).view(-1, 1, 1, 1), mask=mask).argmax(-1)
        parts.end_round()
    return parts


def end_to_end_in_process(model, datasets, args) -> Parts:
    parts = Parts()
    n = len(datasets["clips"])
    for r in range(args.rounds):
        for i in range(n):
            for mode in (MODES if (i + r) % 2 == 0 else MODES[::-1]):
                with parts(mode):
                    _pool(model, collate_videos([datasets[mode][i]]))
        parts.end_round()
    return parts


def end_to_end_workers(model, datasets, args) -> Parts:
    parts = Parts()
    for r in range(args.rounds):
        for mode in (MODES if r % 2 == 0 else MODES[::-1]):
            loader = DataLoader(datasets[mode], batch_size=1, num_workers=args.workers, collate_fn=collate_videos)
            c0, k0, w0 = time.process_time(), children_cpu(), time.perf_counter()
            for batch in loader:
                _pool(model, batch)
            del loader  # workers shut down at the end of the pass: their CPU time is now in children_cpu()
            parts.add(mode, time.process_time() - c0 + children_cpu() - k0, time.perf_counter() - w0)
        parts.end_round()
    return parts


OP_GROUPS = (("convolution", ("conv",)), ("batch norm", ("batch_norm",)), ("ReLU", ("relu", "clamp_min")))


def dense_profile(model, datasets, args) -> dict:
    """Self CPU (ms per video, under ``torch.profiler``) of the dense model part by operator group, one pass per
    video on its decoded and transformed frames, and the GMACs of the backbone's convolutions over one video."""
    from torch.profiler import ProfilerActivity, profile

    shared = datasets["dense"]
    videos = [shared.transform(shared.decode(i)) for i in range(len(shared))]
    batches = [collate_videos([{"label": 0, "video_idx": i, "num_frames": v.shape[1], "video": v,
                                "clip_len": shared.clip_len, "stride": shared.stride}]) for i, v in enumerate(videos)]
    with torch.no_grad():
        model.video_clip_scores(batches[0])  # warm-up (primitive caches)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for batch in batches:
                model.video_clip_scores(batch)
        gmacs = count_gmacs(model.backbone, batches[0]["video"])
    groups = {name: 0.0 for name, _ in OP_GROUPS}
    total = 0.0
    for event in prof.key_averages():
        self_ms = event.self_cpu_time_total / 1e3
        total += self_ms
        for name, keys in OP_GROUPS:
            if any(k in event.key for k in keys):
                groups[name] += self_ms
                break
    n = len(batches)
    out = {name: ms / n for name, ms in groups.items()}
    out["everything else (head, window pooling, copies, Python)"] = (total - sum(groups.values())) / n
    return {"ms_per_video": out, "total_ms_per_video": total / n, "conv_gmacs_per_video": gmacs,
            "conv_gmacs_per_s": gmacs / (groups["convolution"] / n / 1e3) if groups["convolution"] else float("nan")}


def accuracy_rows(ckpt: str, config: str, threads: int) -> list:
    """Test top-1 per gamma_p of ``ckpt`` on ``config``'s test videos: clip-wise at the recipe's stride and at
    F/4, and dense. Uses Trainer.test, i.e. exactly the package's evaluation."""
    import yaml
    from lightning import Trainer

    with open(config) as f:
        data = dict(yaml.safe_load(f)["data"]["init_args"])
    clip_len = data.get("clip_len", 16)
    settings = [("clips", data.get("eval_clip_stride") or max(1, clip_len // 4)), ("clips", max(1, clip_len // 4)),
                ("dense", None)]
    rows, seen = [], set()
    for mode, stride in settings:
        if (mode, stride) in seen:
            continue
        seen.add((mode, stride))
        dm = TemporalDataModule(**{**data, "eval_mode": mode, "eval_clip_stride": stride, "progress": False})
        model = VideoClassifier.load_from_checkpoint(ckpt, map_location="cpu")
        trainer = Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                          enable_model_summary=False)
        torch.set_num_threads(threads)
        c0, w0 = time.process_time(), time.perf_counter()
        out = trainer.test(model, datamodule=dm, verbose=False)[0]
        rows.append({"mode": mode, "stride": stride, "cpu": time.process_time() - c0,
                     "wall": time.perf_counter() - w0, "videos": len(dm.datasets["test"]), **out})
    return rows


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", type=int, default=16, help="test videos")
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--size", type=int, default=64, help="frame size of the generated videos (= short side)")
    ap.add_argument("--crop", type=int, default=56)
    ap.add_argument("--clip-len", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch threads of the model (pinned)")
    ap.add_argument("--workers", type=int, default=1, help="DataLoader workers of table 2 (b)")
    ap.add_argument("--ckpt", default=None, help="a simple3d VideoClassifier checkpoint: its weights are timed, "
                    "and with --config its test accuracy in both modes is printed")
    ap.add_argument("--config", default=None, help="the recipe --ckpt was trained with (its data section)")
    ap.add_argument("--skip-timing", action="store_true")
    ap.add_argument("--root", default=os.path.join(tempfile.gettempdir(), "lt_eval_bench"))
    ap.add_argument("--out", default=None, help="write PREFIX.md (the tables) and PREFIX.json")
    args = ap.parse_args(argv)
    pin_threads(args.threads)
    lines: list = []

    def emit(line: str = "") -> None:
        print(line)
        lines.append(line)

    result: dict = {"settings": {k: v for k, v in vars(args).items() if k not in ("root", "out")},
                    "machine": machine_line()}
    emit(f"{result['machine']}\n")
    if not args.skip_timing:
        model = (VideoClassifier.load_from_checkpoint(args.ckpt, map_location="cpu") if args.ckpt
                 else VideoClassifier("simple3d", num_classes=4)).eval()
        datasets = _datasets(args)
        F = args.clip_len
        emit(f"{args.videos} videos of {args.frames} frames, {args.size}x{args.size} H.264, crop {args.crop}, "
             f"F = {F}. Both are this package's evaluation modes on the same decoded video; clip-wise "
             "(eval_mode='clips') reads its clips as views of it (no per-clip decode or transform): starts every "
             f"{max(1, F // 4)} frames + the last "
             f"({len(datasets['clips'].clip_starts(0))} clips of {F} frames = "
             f"{len(datasets['clips'].clip_starts(0)) * F} frames through the model per video); dense: one pass "
             f"over {args.frames} frames, {args.frames - F + 1} clip scores; model simple3d; medians of "
             f"{args.rounds} rounds\n")
        p = parts_table(model, datasets, args)
        cpu, wall = p.median_cpu(), p.median_wall()
        n = args.videos
        shared = ("decode", "transform")
        emit("Table 1: where the time goes, ms per video (CPU / wall), in this process, 1 video at a time\n")
        emit("| part | clip-wise | dense |")
        emit("|---|---:|---:|")
        for part in shared:
            s = f"{cpu[part] / n * 1e3:.1f} / {wall[part] / n * 1e3:.1f}"
            emit(f"| {part} (shared, once per video) | {s} | {s} |")
        emit(f"| (floor: bare PyAV decode + RGB of the same video) | {cpu['floor'] / n * 1e3:.1f} / "
             f"{wall['floor'] / n * 1e3:.1f} | |")
        for part in ("model", "pool"):
            c, d = f"{part} clips", f"{part} dense"
            emit(f"| {part} | {cpu[c] / n * 1e3:.1f} / {wall[c] / n * 1e3:.1f} | "
                 f"{cpu[d] / n * 1e3:.1f} / {wall[d] / n * 1e3:.1f} |")
        tot = {m: sum(cpu[k] for k in shared + (f"model {m}", f"pool {m}")) for m in MODES}
        emit(f"| **sum** | {tot['clips'] / n * 1e3:.1f} | {tot['dense'] / n * 1e3:.1f} |")
        data = cpu["decode"] + cpu["transform"]
        model_ratio = p.median_ratio("model clips", "model dense")
        emit(f"\nmodel part alone: dense {model_ratio:.2f}x faster (CPU); decode + "
             f"transform are {100 * data / tot['dense']:.0f}% of the dense CPU time. Bounds from these parts: "
             f"in one process (CPU) {tot['clips'] / tot['dense']:.2f}x; with decode + transform overlapped on a "
             f"free core, wall {max(data, cpu['model clips']) / max(data, cpu['model dense']):.2f}x\n")
        result["parts_ms_per_video"] = {k: {"cpu": cpu[k] / n * 1e3, "wall": wall[k] / n * 1e3} for k in cpu}
        result["model_ratio_cpu"] = model_ratio
        e1 = end_to_end_in_process(model, datasets, args)
        e2 = end_to_end_workers(model, datasets, args)
        emit(f"Table 2: end to end, s per video (CPU / wall), medians of {args.rounds} rounds; speed-up = median of "
             "the per-round ratios (min-max)\n")
        emit("| path | clip-wise | dense | speed-up CPU | speed-up wall | goal |")
        emit("|---|---:|---:|---:|---:|---|")
        result["end_to_end"] = {}
        for key, name, e in (("in_process", f"(a) in process, num_workers=0, {args.threads} model thread(s)", e1),
                             ("workers", f"(b) DataLoader, {args.workers} worker(s) overlapping decode, "
                              f"{args.threads} model thread(s); CPU = process + workers", e2)):
            c, w = e.median_cpu(), e.median_wall()
            ratios = [[r["clips"][k] / r["dense"][k] for r in e.rounds] for k in (0, 1)]
            cells = [f"{statistics.median(x):.2f}x ({min(x):.2f}-{max(x):.2f})" for x in ratios]
            emit(f"| {name} | {c['clips'] / n:.3f} / {w['clips'] / n:.3f} | {c['dense'] / n:.3f} / "
                 f"{w['dense'] / n:.3f} | {cells[0]} | {cells[1]} | dense >= 4x |")
            result["end_to_end"][key] = {
                "clips_s_per_video": {"cpu": c["clips"] / n, "wall": w["clips"] / n},
                "dense_s_per_video": {"cpu": c["dense"] / n, "wall": w["dense"] / n},
                "speedup_cpu": {"median": statistics.median(ratios[0]), "min": min(ratios[0]), "max": max(ratios[0])},
                "speedup_wall": {"median": statistics.median(ratios[1]), "min": min(ratios[1]), "max": max(ratios[1])}}
        prof = dense_profile(model, datasets, args)
        result["dense_profile"] = prof
        emit(f"\nTable 3: the dense model part profiled (torch.profiler, self CPU, ms per video, {n} videos) and what "
             "the goal leaves it\n")
        emit("| operator group | ms per video | share |")
        emit("|---|---:|---:|")
        for name, ms in prof["ms_per_video"].items():
            emit(f"| {name} | {ms:.1f} | {100 * ms / prof['total_ms_per_video']:.0f}% |")
        emit(f"| **model, dense** | {prof['total_ms_per_video']:.1f} | 100% |")
        # the goal's arithmetic on Table 1's parts (same rounds, same videos): the convolutions' share of the
        # profiled dense model applied to Table 1's dense model time
        share = prof["ms_per_video"]["convolution"] / prof["total_ms_per_video"]
        parts_ms = {k: v["cpu"] for k, v in result["parts_ms_per_video"].items()}
        clips_ms = sum(parts_ms[k] for k in shared + ("model clips", "pool clips"))
        data_ms = sum(parts_ms[k] for k in shared)
        conv_ms = share * parts_ms["model dense"]
        budget = clips_ms / 4  # ms per video for dense >= 4x
        result["goal"] = {"clips_ms": clips_ms, "dense_budget_ms": budget, "decode_transform_ms": data_ms,
                          "model_budget_ms": budget - data_ms, "conv_share": share, "conv_ms": conv_ms,
                          "bound_conv_only": clips_ms / (data_ms + conv_ms + parts_ms["pool dense"])}
        emit(f"\nThe convolutions: {prof['conv_gmacs_per_video']:.2f} GMACs per video, "
             f"{100 * share:.0f}% of the dense model's CPU time ({prof['conv_gmacs_per_video'] / conv_ms * 1e3:.1f} "
             f"GMACs/s at Table 1's model time, one thread). On Table 1's parts, dense >= 4x needs the dense path "
             f"<= {budget:.0f} ms CPU per video (clip-wise {clips_ms:.0f} / 4); decode + transform, shared by both "
             f"modes, take {data_ms:.0f} ms of it, leaving {budget - data_ms:.0f} ms for the model, whose convolutions "
             f"alone take {conv_ms:.0f} ms. With everything else of the model removed, the speed-up would be at most "
             f"{result['goal']['bound_conv_only']:.2f}x.")
        result["load_after"] = load_average()
        emit(f"\n{result['load_after']} (after)\n")
    if args.ckpt and args.config:
        rows = accuracy_rows(args.ckpt, args.config, args.threads)
        result["accuracy"] = rows
        emit(f"Table 4: test accuracy of {args.ckpt} on {args.config}'s test videos (Trainer.test; goal: dense as "
             "accurate as clip-wise)\n")
        emit("| mode | clip starts | top-1 gamma_p = 1 | gamma_p = 0 (mean) | gamma_p = 1e6 (max) | test s CPU / wall |")
        emit("|---|---|---:|---:|---:|---:|")
        for r in rows:
            starts = f"every {r['stride']} frames + last" if r["mode"] == "clips" else "every frame (stride 1)"
            emit(f"| {r['mode']} | {starts} | {r['test/top1']:.3f} | {r.get('test/gp0/top1', float('nan')):.3f} | "
                 f"{r.get('test/gp1e06/top1', float('nan')):.3f} | {r['cpu']:.1f} / {r['wall']:.1f} |")
        emit(f"\n{load_average()} (after)")
    if args.out:
        with open(args.out + ".md", "w") as f:
            f.write("# Dense vs clip-wise evaluation (benchmarks/evaluation.py)\n\n" + "\n".join(lines) + "\n")
        with open(args.out + ".json", "w") as f:
            json.dump(result, f, indent=1, default=float)
    return result


if __name__ == "__main__":
    main()
