"""SGS trade-off: video top-1 and GMACs per clip without SGS and with SGS (seed Tables A.3 / A.4), on data where
SGS's premise holds (appearance variant) and where it does not (motion variant).

    nice -n 5 python benchmarks/sgs_tradeoff.py --jobs 2     # the full sweep, ~2.5 h on 2 shared cores
    python benchmarks/sgs_tradeoff.py --quick                 # smoke run (tiny data, 2 epochs), ~1 min

What runs. For each dataset seed s (the dataset and the training run both follow s):

* data: the package's synthetic generator writes real H.264 videos of exactly T = 32 frames at 32x32
  (``appearance``: the class is the shape of a still object shown during the event; ``motion``: the
  ``redundancy`` variant, whose class is the direction of a motion; both with frozen stretches, 1-2
  distractors, noise, an event of 20-30 % of the video). Each video is decoded once (``read_clip``) into memory
  and cached as .npz; a clip is the whole video.
* models: the quickstart CNN ``simple3d`` (stem, res2, res3, res4; max pooling head) without SGS, and with SGS
  after res2 for B in {4, 8, 16, 32} x assignment in {fixed, interpolate, ordered, released} (``released`` =
  the authors' released layer, ``fixed`` = a temporal average pooling to B positions, the baseline). Same seed, same data order for every model.
* training: Adam (lr 1e-3, cosine decay over ``--max-epochs``), batch 16, one thread per run; each clip gets a
  random symmetry of the square (flips, transpose; a motion's label is mapped with it) and each batch a random
  circular shift (the frames are a torus): without them the CNN learnt the 384 training clips by heart (100 %
  train, 75 % validation top-1 without SGS). Every run trains ``--max-epochs`` = 60 epochs and is tested
  with the weights of its best validation epoch: the no-SGS model has long stopped improving by then (its
  validation top-1 plateaus after 15-40 epochs); the SGS models learn more slowly, and their validation
  curves (``details`` in the results file) show where they stopped improving. (``--min-epochs`` < ``--max-epochs`` turns on early stopping with ``--patience``; it is off because
  with 30 epochs, or with early stopping after 20, SGS models were cut off while still improving, or before
  they had left chance level: one motion run left it only after 30 epochs.)
* test: video top-1 on the test split; GMACs per clip = multiply-accumulates of what actually ran, each clip
  on its own B' (``count_gmacs``), averaged over the test clips. Table A.4: the B = 32 models, tested with
  B in {4, 8, 16} set on the trained model (``model.temporal.num_bins = b``).

The textured and order variants (data that does not flatter SGS: no frozen frames, camera pan, noise on every
frame, evidence in 30-60 % of the frames; order: the class is the order of two events), with the fixed pooling
baseline and the ordered assignment: the four-variant trade-off (results: ``sgs_tradeoff_variants`` for
appearance, textured, order with ``--bins 8 4 --sizes 256 64 200 --max-epochs 24 --min-epochs 24``, and
``sgs_tradeoff_motion`` with ``--bins 8 --sizes 384 96 192 --max-epochs 30 --min-epochs 30``; the README gives
the exact command lines). Every run also records its train top-1 and, where the generator's per-frame ground
truth is cached, the bin-purity probe (``bin_purity``). ``--block-size`` adds SGS-on-blocks runs (the B bins
shared out between the blocks), ``--temporal-padding zeros`` runs with zero padding before SGS. The README's
tables are ``readme_table`` and ``default_table`` of the results files.

Writes ``--out`` (JSON: ``{"rows": [{"dataset", "sgs", "num_bins", "seed", "top1", "gmacs"}, ...], "a4_rows":
[... + "train_num_bins"], "details": [...], "conditions": {...}}``) and ``--markdown`` (the tables). Finished runs
are cached one JSON line each under ``--cache`` and are not run again: an interrupted sweep resumes.
Decides nothing: the goal (on the appearance variant some SGS setting within 1 point of no-SGS top-1, mean over
seeds, with >= 40 % fewer GMACs per clip) is printed beside the figures.
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import json
import multiprocessing
import os
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout's package, not an installed one

from lightning_temporal.data.synthetic import class_names, ensure_dataset  # noqa: E402
from lightning_temporal.data.video import read_clip  # noqa: E402
from lightning_temporal.flops import gmacs_per_clip  # noqa: E402
from lightning_temporal.models.registry import build_backbone  # noqa: E402
from lightning_temporal.models.sgs import DEFAULT_ASSIGNMENT, block_diagonal  # noqa: E402

# table name -> generator variant; textured and order: redundancy partial and mixed (no frozen frames, camera
# pan, noise everywhere), evidence in 30-60 % of the frames; order: the class is the order of two events
DATASETS = {"appearance": "appearance", "motion": "redundancy", "textured": "textured", "order": "order"}
ASSIGNMENTS = ("fixed", "interpolate", "ordered", "released")
FRAMES, SIZE = 32, 32
BACKBONE = "simple3d"
A4_BINS = (4, 8, 16)


# --------------------------------------------------------------------------------------------------------
# Data: generated once, decoded once, cached
# --------------------------------------------------------------------------------------------------------
def data_params(dataset: str, seed: int, sizes: Tuple[int, int, int]) -> dict:
    fraction = (0.3, 0.6) if dataset in ("textured", "order") else (0.2, 0.3)
    return dict(variant=DATASETS[dataset], num_train=sizes[0], num_val=sizes[1], num_test=sizes[2], seed=seed,
                size=SIZE, min_frames=FRAMES, max_frames=FRAMES, event_fraction=fraction,
                num_distractors=(1, 2), noise=0.03)


def load_data(cache: str, dataset: str, seed: int, sizes: Tuple[int, int, int]) -> Dict[str, Tuple[torch.Tensor, torch.Tensor]]:
    """{split: (clips uint8 [N, T, S, S], labels int64 [N])}, decoded from the generated videos once; also
    "test_scores": the per-frame ground truth float32 [N, T] of the test clips (> 0 on the event's frames)."""
    params = data_params(dataset, seed, sizes)
    key = hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()[:12]
    root = os.path.join(cache, "data", f"{dataset}_s{seed}_{key}")
    npz = root + ".npz"
    if not os.path.exists(npz):
        paths = ensure_dataset(root, progress=False, num_workers=0, **params)
        names = class_names(params["variant"])
        arrays = {}
        for split, manifest in paths.items():
            with open(manifest) as f:
                rows = [line.strip().split(",") for line in f.readlines()[1:]]
            clips = [read_clip(os.path.join(root, r[0]), 0, FRAMES)[..., 0].numpy() for r in rows]  # grey
            arrays[f"x_{split}"] = np.stack(clips).astype(np.uint8)  # [N, T, S, S]
            arrays[f"y_{split}"] = np.array([names.index(r[1]) for r in rows], dtype=np.int64)
            arrays[f"s_{split}"] = np.stack([np.load(os.path.join(root, r[5]))[:FRAMES] for r in rows]
                                            ).astype(np.float32)
        np.savez(npz + ".part.npz", **arrays)
        os.replace(npz + ".part.npz", npz)
    with np.load(npz) as f:
        out = {s: (torch.from_numpy(f[f"x_{s}"]), torch.from_numpy(f[f"y_{s}"])) for s in ("train", "val", "test")}
        if "s_test" in f:
            out["test_scores"] = torch.from_numpy(f["s_test"])
        return out


# Label permutations of the motion classes (up, down, left, right) under the 8 symmetries of the square:
# bit 0 flips x (left <-> right), bit 1 flips y (up <-> down), bit 2 transposes (up <-> left, down <-> right).
_FLIP_X, _FLIP_Y, _TRANSPOSE = torch.tensor([0, 1, 3, 2]), torch.tensor([1, 0, 2, 3]), torch.tensor([2, 3, 0, 1])


def augment(x: torch.Tensor, y: torch.Tensor, dataset: str, g: torch.Generator) -> Tuple[torch.Tensor, torch.Tensor]:
    """Random symmetry of the square per clip and a random circular shift per batch (the frames are a torus).

    x uint8 [N, T, S, S], y [N]. Shapes (appearance) keep their label under every symmetry; a motion's
    direction is mapped with the symmetry (a flip of x turns "left" into "right"). Loops over the 8 kinds of
    symmetry, not over clips.
    """
    kind = torch.randint(0, 8, (len(y),), generator=g)
    x, y = x.clone(), y.clone()
    for k in range(1, 8):
        sel = kind == k
        if not bool(sel.any()):
            continue
        xs, ys = x[sel], y[sel]
        if k & 1:
            xs, ys = xs.flip(-1), _FLIP_X[ys]
        if k & 2:
            xs, ys = xs.flip(-2), _FLIP_Y[ys]
        if k & 4:
            xs, ys = xs.transpose(-1, -2), _TRANSPOSE[ys]
        x[sel] = xs
        if dataset == "motion":
            y[sel] = ys
    shift = torch.randint(0, x.shape[-1], (2,), generator=g)
    return x.roll((int(shift[0]), int(shift[1])), dims=(-2, -1)), y


def to_input(x: torch.Tensor) -> torch.Tensor:
    """uint8 [N, T, S, S] -> float [N, 3, T, S, S], centred and scaled as the quickstart's normalisation."""
    return ((x.float() / 255.0 - 0.5) / 0.25).unsqueeze(1).expand(-1, 3, -1, -1, -1)


# --------------------------------------------------------------------------------------------------------
# One run
# --------------------------------------------------------------------------------------------------------
def sgs_options(assignment: Optional[str], num_bins: Optional[int], block_size: Optional[int] = None,
                temporal_padding: Optional[str] = None) -> Optional[dict]:
    """SGS's constructor arguments; with `block_size` the B bins of a clip are shared out equally between its
    T / block_size blocks (B * block_size / T per block), so that a block run costs what a clip run costs;
    `temporal_padding` ("zeros") only when it is not SGS's default ("replicate")."""
    if assignment is None:
        return None
    options = {"after": "res2", "num_bins": num_bins, "assignment": assignment}
    if temporal_padding:
        options["temporal_padding"] = temporal_padding
    if block_size:
        options["block_size"] = block_size
        options["num_bins"] = max(1, num_bins * block_size // FRAMES)
    return options


@torch.no_grad()
def bin_purity(model, x: torch.Tensor, scores: torch.Tensor, batch: int = 64) -> Tuple[float, float]:
    """The bin-purity probe on clips x uint8 [N, T, S, S] with per-frame ground truth scores [N, T] (> 0: an
    object / event frame): (fraction of clips having a bin whose weight is >= 90 % on object frames, mean over
    bins of max(p, 1 - p), p a bin's object share). Reads SGS's own sampling matrix on its input (simple3d has
    no temporal stride before SGS, so SGS's frames are the clip's frames). Without SGS every frame is a bin."""
    temporal = getattr(model, "temporal", None)
    obj = (scores > 0).float()
    if temporal is None:
        return 1.0, 1.0
    model.eval()
    seen = []
    handle = temporal.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    has, purity = [], []
    try:
        for i in range(0, len(x), batch):
            seen.clear()
            model(to_input(x[i : i + batch]))
            w, mask, _ = temporal.weights(seen[0])  # [n, B', T], or [n * blocks, B', block] on blocks
            n, t = seen[0].shape[0], seen[0].shape[2]
            if w.shape[0] != n:
                w, mask = block_diagonal(w, w.shape[0] // n), mask.reshape(n, -1)
            w = w / w.sum(-1, keepdim=True).clamp_min(1e-30)
            p = torch.matmul(w, obj[i : i + batch].unsqueeze(-1)).squeeze(-1)  # object share per bin
            has.append(((p >= 0.9) & mask).any(dim=1).float())
            purity.append(torch.where(mask, torch.maximum(p, 1 - p), torch.zeros_like(p)).sum(1) / mask.sum(1))
    finally:
        handle.remove()
    return float(torch.cat(has).mean()), float(torch.cat(purity).mean())


@torch.no_grad()
def evaluate(model, x: torch.Tensor, y: torch.Tensor, batch: int = 64) -> Tuple[float, float]:
    """(top-1, mean B') on clips x uint8 [N, T, S, S], in eval mode."""
    model.eval()
    correct, bins = 0, []
    for i in range(0, len(y), batch):
        logits = model(to_input(x[i : i + batch]))
        correct += int((logits.argmax(-1) == y[i : i + batch]).sum())
        temporal = getattr(model, "temporal", None)
        bins.append(temporal.last_num_bins.float() if temporal is not None
                    else torch.full((len(logits),), float(x.shape[1])))
    return correct / len(y), float(torch.cat(bins).mean())


def gmacs(model, x: torch.Tensor, sgs: bool) -> float:
    """Average GMACs per clip over the clips x (each clip on its own B'); without SGS every clip costs the same."""
    clips = to_input(x if sgs else x[:2])
    return statistics.fmean(gmacs_per_clip(model, clips))


def run_one(spec: dict) -> dict:
    """Train and test one model (spec: dataset, seed, assignment, num_bins, hyper-parameters, cache)."""
    torch.set_num_threads(1)
    t_cpu, t_wall = time.process_time(), time.perf_counter()
    sizes = tuple(spec["sizes"])
    data = load_data(spec["cache"], spec["dataset"], spec["seed"], sizes)
    (xtr, ytr), (xva, yva), (xte, yte) = data["train"], data["val"], data["test"]
    torch.manual_seed(spec["seed"])
    options = sgs_options(spec["assignment"], spec["num_bins"], spec.get("block_size"), spec.get("temporal_padding"))
    num_classes = len(class_names(DATASETS[spec["dataset"]]))
    model = build_backbone(BACKBONE, num_classes, sgs=copy.deepcopy(options))
    opt = torch.optim.Adam(model.parameters(), lr=spec["lr"])
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, spec["max_epochs"])
    order = torch.Generator().manual_seed(spec["seed"])
    curve, best, best_state, best_epoch = [], -1.0, None, -1
    for epoch in range(spec["max_epochs"]):
        model.train()
        for idx in torch.randperm(len(ytr), generator=order).split(spec["batch"]):
            xb, yb = augment(xtr[idx], ytr[idx], spec["dataset"], order)
            loss = F.cross_entropy(model(to_input(xb)), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
        acc, _ = evaluate(model, xva, yva)
        curve.append(round(acc, 4))
        if acc > best:
            best, best_state, best_epoch = acc, copy.deepcopy(model.state_dict()), epoch
        if epoch + 1 >= spec["min_epochs"] and epoch - best_epoch >= spec["patience"]:
            break
    model.load_state_dict(best_state)
    top1, bprime = evaluate(model, xte, yte)
    train_top1, _ = evaluate(model, xtr, ytr)
    record = {
        "dataset": spec["dataset"], "sgs": options, "num_bins": spec["num_bins"], "seed": spec["seed"],
        "top1": top1, "gmacs": gmacs(model, xte, options is not None),
        "mean_bins": bprime, "epochs": len(curve), "best_epoch": best_epoch + 1, "val_curve": curve,
        "train_top1": train_top1,
    }
    if "test_scores" in data:
        record["pure_bin_clips"], record["bin_purity"] = bin_purity(model, xte, data["test_scores"])
    if options is not None and spec["num_bins"] == 32 and not spec.get("block_size"):  # Table A.4: fewer bins
        record["a4"] = []
        for b in A4_BINS:
            model.temporal.num_bins = b
            acc, bp = evaluate(model, xte, yte)
            record["a4"].append({"num_bins": b, "top1": acc, "gmacs": gmacs(model, xte, True), "mean_bins": bp})
        model.temporal.num_bins = 32
    record["cpu_s"] = round(time.process_time() - t_cpu, 1)
    record["wall_s"] = round(time.perf_counter() - t_wall, 1)
    return record


# --------------------------------------------------------------------------------------------------------
# Sweep, cache, tables
# --------------------------------------------------------------------------------------------------------
def spec_key(spec: dict) -> str:
    return json.dumps({k: v for k, v in spec.items() if k != "cache"}, sort_keys=True)


def read_cache(path: str) -> Dict[str, dict]:
    done = {}
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                if line.strip():
                    item = json.loads(line)
                    done[item["key"]] = item["record"]
    return done


def fmt_pct(v: float) -> str:
    return f"{100 * v:.1f}"


def config(r: dict) -> Tuple[Optional[str], Optional[int], Optional[int]]:
    """(assignment, B, block_size) of a record; (None, None, None) without SGS. A run with zero temporal
    padding before SGS is named "<assignment>, zeros padding"."""
    sgs = r["sgs"] or {}
    name = sgs.get("assignment")
    if sgs.get("temporal_padding"):
        name = f"{name}, {sgs['temporal_padding']} padding"
    return name, r["num_bins"], sgs.get("block_size")


def config_name(c: Tuple[Optional[str], Optional[int], Optional[int]]) -> str:
    if c[0] is None:
        return "no SGS"
    return f"SGS {c[0]}, B = {c[1]}" + (f", block {c[2]}" if c[2] else "")


def _mean(group: List[dict], key: str) -> Optional[float]:
    vals = [r[key] for r in group if key in r]
    return statistics.fmean(vals) if vals else None


def tables(records: List[dict], seeds: List[int]) -> str:
    out = []
    for dataset in sorted({r["dataset"] for r in records}):
        rs = [r for r in records if r["dataset"] == dataset]
        base = [r for r in rs if r["sgs"] is None]
        base_top1 = statistics.fmean(r["top1"] for r in base) if base else float("nan")
        base_g = statistics.fmean(r["gmacs"] for r in base) if base else float("nan")
        out.append(f"\n### {dataset} variant (video top-1 %, T = {FRAMES}, {SIZE}x{SIZE}, {BACKBONE}, SGS after res2)\n")
        probe = any("pure_bin_clips" in r for r in rs)
        out.append("| model | " + " | ".join(f"seed {s}" for s in seeds)
                   + " | mean top-1 | vs no SGS (goal >= -1.0) | vs fixed, same B | GMACs / clip "
                     "| fewer GMACs (goal >= 40 %) | mean B' | train top-1 | epochs (best) |"
                   + (" clips with a >= 90 % object bin | mean bin purity |" if probe else ""))
        out.append("|---|" + "---|" * len(seeds) + "---|---|---|---|---|---|---|---|" + ("---|---|" if probe else ""))
        configs = sorted({config(r) for r in rs}, key=lambda c: (c[0] is not None, c[1] or 0, c[0] or "", c[2] or 0))
        for c in configs:
            group = [r for r in rs if config(r) == c]
            by_seed = {r["seed"]: r for r in group}
            top1 = statistics.fmean(r["top1"] for r in group)
            g = statistics.fmean(r["gmacs"] for r in group)
            fixed = [r for r in rs if config(r) == ("fixed", c[1], c[2])]
            vs_fixed = (f"{100 * (top1 - statistics.fmean(r['top1'] for r in fixed)):+.1f}"
                        if fixed and c[0] not in (None, "fixed") else "")
            delta = "" if c[0] is None else f"{100 * (top1 - base_top1):+.1f}"
            fewer = "" if c[0] is None else f"{100 * (1 - g / base_g):.0f} %"
            epochs = ", ".join(f"{r['epochs']} ({r['best_epoch']})" for r in sorted(group, key=lambda r: r["seed"]))
            train = _mean(group, "train_top1")
            row = (f"| {config_name(c)} | "
                   + " | ".join(fmt_pct(by_seed[s]["top1"]) if s in by_seed else "–" for s in seeds)
                   + f" | {fmt_pct(top1)} | {delta} | {vs_fixed} | {g:.4f} | {fewer} "
                   f"| {statistics.fmean(r['mean_bins'] for r in group):.1f} "
                   f"| {'' if train is None else fmt_pct(train)} | {epochs} |")
            if probe:
                pure, purity = _mean(group, "pure_bin_clips"), _mean(group, "bin_purity")
                row += (f" {'' if pure is None else fmt_pct(pure)} | "
                        f"{'' if purity is None else fmt_pct(purity)} |")
            out.append(row)
        a4 = [r for r in rs if r.get("a4")]
        if a4:
            out.append(f"\n**Table A.4, {dataset}**: trained with B = 32, tested with fewer bins (mean over seeds; "
                       "top-1 % / GMACs per clip / mean B')\n")
            out.append("| assignment | " + " | ".join(f"B = {b}" for b in (*A4_BINS, 32)) + " |")
            out.append("|---|" + "---|" * (len(A4_BINS) + 1))
            for assignment in sorted({r["sgs"]["assignment"] for r in a4}):
                grp = [r for r in a4 if r["sgs"]["assignment"] == assignment]
                cells = []
                for b in A4_BINS:
                    items = [e for r in grp for e in r["a4"] if e["num_bins"] == b]
                    cells.append(f"{fmt_pct(statistics.fmean(e['top1'] for e in items))} / "
                                 f"{statistics.fmean(e['gmacs'] for e in items):.4f} / "
                                 f"{statistics.fmean(e['mean_bins'] for e in items):.1f}")
                cells.append(f"{fmt_pct(statistics.fmean(r['top1'] for r in grp))} / "
                             f"{statistics.fmean(r['gmacs'] for r in grp):.4f} / "
                             f"{statistics.fmean(r['mean_bins'] for r in grp):.1f}")
                out.append(f"| {assignment} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def _rank(name: Optional[str]) -> float:
    """Table order of a config name: no SGS, then ASSIGNMENTS' order, a zero-padding run after its assignment."""
    if name is None:
        return -1.0
    return ASSIGNMENTS.index(name.split(",")[0]) + (0.5 if "," in name else 0.0)


def readme_table(records: List[dict], dataset: str) -> str:
    """The README's table for one variant, from the result records (mean over seeds): top-1, its gap to no SGS
    and to the fixed pooling at the same B, GMACs per clip and the saving, mean B', train top-1, best epochs,
    and the bin-purity probe (clips having a bin >= 90 % on object frames). The README's tables are this
    function's output on the results file (a test checks it)."""
    rs = [r for r in records if r["dataset"] == dataset]
    base = [r for r in rs if r["sgs"] is None]
    b_g = statistics.fmean(r["gmacs"] for r in base)
    seeds = sorted({r["seed"] for r in rs})
    lines = [f"| {dataset} variant | top-1 % (seeds {', '.join(map(str, seeds))}) | vs no SGS | vs fixed | "
             "GMACs / clip | fewer GMACs | mean B' | train top-1 % | best epochs | clips with a ≥ 90 % object bin |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    configs = sorted({config(r) for r in rs}, key=lambda c: (c[0] is not None, c[1] or 0, c[2] or 0,
                                                            _rank(c[0])))
    for c in configs:
        grp = sorted((r for r in rs if config(r) == c), key=lambda r: r["seed"])
        own = {r["seed"] for r in grp}  # a setting run on fewer seeds is compared on its own seeds
        top1, g = statistics.fmean(r["top1"] for r in grp), statistics.fmean(r["gmacs"] for r in grp)
        fixed = ([r for r in rs if config(r) == ("fixed", c[1], c[2]) and r["seed"] in own]
                 or [r for r in rs if config(r) == ("fixed", c[1], None) and r["seed"] in own])  # blocks: vs clip
        vs_fixed = (f"{100 * (top1 - statistics.fmean(r['top1'] for r in fixed)):+.1f}"
                    if fixed and c[0] not in (None, "fixed") else "")
        b_top1 = statistics.fmean(r["top1"] for r in base if r["seed"] in own)
        name = "no SGS" if c[0] is None else f"{c[0]}, B = {c[1]}" + (f", block {c[2]}" if c[2] else "")
        if own != set(seeds):
            name += f" (seed {', '.join(map(str, sorted(own)))} only)"
        pure = _mean(grp, "pure_bin_clips")
        lines.append(
            f"| {name} | {fmt_pct(top1)} ({', '.join(fmt_pct(r['top1']) for r in grp)}) "
            f"| {'' if c[0] is None else f'{100 * (top1 - b_top1):+.1f}'} | {vs_fixed} | {g:.4f} "
            f"| {'' if c[0] is None else f'{100 * (1 - g / b_g):.0f} %'} "
            f"| {statistics.fmean(r['mean_bins'] for r in grp):.1f} | {fmt_pct(_mean(grp, 'train_top1') or 0.0)} "
            f"| {', '.join(str(r['best_epoch']) for r in grp)} of {grp[0]['epochs']} "
            f"| {'' if pure is None or c[0] is None else fmt_pct(pure)} |")
    return "\n".join(lines).replace("+-", "−").replace("| -", "| −")


def default_table(records: List[dict], assignment: str) -> str:
    """The issue's check of the default assignment, per variant and B (mean top-1 over the seeds every setting
    of the row ran on): its top-1 against fixed pooling at the same B (points, and GMACs relative to it) and
    against no SGS (points, and the GMACs saved). The README's table is this function's output."""
    lines = [f"| variant, B | `{assignment}` top-1 % | fixed pooling top-1 % | vs fixed (points) | GMACs vs fixed "
             "| no SGS top-1 % | vs no SGS (points) | fewer GMACs than no SGS |", "|---|---|---|---|---|---|---|---|"]
    for dataset in sorted({r["dataset"] for r in records}):
        rs = [r for r in records if r["dataset"] == dataset]
        for b in sorted({r["num_bins"] for r in rs if config(r) == (assignment, r["num_bins"], None)}):
            own = [r for r in rs if config(r) == (assignment, b, None)]
            fixed = [r for r in rs if config(r) == ("fixed", b, None)]
            base = [r for r in rs if r["sgs"] is None]
            seeds = {r["seed"] for r in own} & {r["seed"] for r in fixed} & {r["seed"] for r in base}
            if not seeds:
                continue
            mean = {k: (statistics.fmean(r["top1"] for r in g if r["seed"] in seeds),
                        statistics.fmean(r["gmacs"] for r in g if r["seed"] in seeds))
                    for k, g in (("own", own), ("fixed", fixed), ("base", base))}
            (t, g), (ft, fg), (bt, bg) = mean["own"], mean["fixed"], mean["base"]
            lines.append(f"| {dataset}, B = {b} | {fmt_pct(t)} | {fmt_pct(ft)} | {100 * (t - ft):+.1f} | "
                         f"{g / fg:.2f}× | {fmt_pct(bt)} | {100 * (t - bt):+.1f} | {100 * (1 - g / bg):.0f} % |")
    return "\n".join(lines).replace("+-", "−").replace("| -", "| −")


def verdict_lines(records: List[dict]) -> str:
    """Per variant and B: each adaptive assignment against the fixed pooling at the same B and against no SGS."""
    lines = ["\nSGS against a fixed temporal average pooling at the same B (mean top-1 over seeds, points; "
             "GMACs per clip relative to the fixed pooling):"]
    for dataset in sorted({r["dataset"] for r in records}):
        rs = [r for r in records if r["dataset"] == dataset]
        base = [r for r in rs if r["sgs"] is None]
        for c in sorted({config(r) for r in rs if config(r)[0] == "fixed"}, key=lambda c: (c[1], c[2] or 0)):
            fixed = [r for r in rs if config(r) == c]
            f_top1, f_g = statistics.fmean(r["top1"] for r in fixed), statistics.fmean(r["gmacs"] for r in fixed)
            cells = []
            for a in ASSIGNMENTS[1:]:
                grp = [r for r in rs if config(r) == (a, c[1], c[2])]
                if grp:
                    d = 100 * (statistics.fmean(r["top1"] for r in grp) - f_top1)
                    g = statistics.fmean(r["gmacs"] for r in grp) / f_g
                    cells.append(f"{a} {d:+.1f} ({g:.2f}x GMACs)")
            ref = (f"; fixed vs no SGS {100 * (f_top1 - statistics.fmean(r['top1'] for r in base)):+.1f}"
                   if base else "")
            lines.append(f"* {dataset}, B = {c[1]}{f', block {c[2]}' if c[2] else ''}: " + ", ".join(cells) + ref)
    return "\n".join(lines) if len(lines) > 1 else ""


def goal_lines(records: List[dict]) -> str:
    rs = [r for r in records if r["dataset"] == "appearance"]
    base = [r for r in rs if r["sgs"] is None]
    if not base:
        return ""
    b_top1 = statistics.fmean(r["top1"] for r in base)
    b_g = statistics.fmean(r["gmacs"] for r in base)
    lines = ["\nGoal (appearance variant): some SGS setting within 1 point of no-SGS top-1 (mean over seeds) "
             "with >= 40 % fewer GMACs per clip."]
    met = []
    for assignment, b in sorted({(r["sgs"]["assignment"], r["num_bins"]) for r in rs if r["sgs"]}):
        grp = [r for r in rs if r["sgs"] and r["sgs"]["assignment"] == assignment and r["num_bins"] == b]
        d = 100 * (statistics.fmean(r["top1"] for r in grp) - b_top1)
        fewer = 100 * (1 - statistics.fmean(r["gmacs"] for r in grp) / b_g)
        if d >= -1.0 and fewer >= 40.0:
            met.append(f"{assignment} B = {b} ({d:+.1f} points, {fewer:.0f} % fewer GMACs)")
    lines.append("Met by: " + ("; ".join(met) if met else "no setting") + ".")
    return "\n".join(lines)


def run_conditions(records: List[dict], trained_now: int) -> dict:
    """How the runs behind ``records`` were trained, from what each record kept (runs cached before the records
    kept it say "not recorded"): runs in parallel, load average when each ended, how many came from the cache."""
    jobs = sorted({r["jobs"] for r in records if "jobs" in r})
    loads = [r["load_end"] for r in records if "load_end" in r]
    missing = sum("jobs" not in r for r in records)
    note = f" ({missing} runs: not recorded)" if missing and (jobs or loads) else ""
    return {"trained_now": trained_now, "from_cache": len(records) - trained_now,
            "jobs": (", ".join(map(str, jobs)) if jobs else "not recorded") + note,
            "load_end": (f"{min(loads):.1f}-{max(loads):.1f}" if loads else "not recorded") + note}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", nargs="+", default=["appearance", "motion"], choices=list(DATASETS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    ap.add_argument("--bins", nargs="+", type=int, default=[4, 8, 16, 32])
    ap.add_argument("--assignments", nargs="+", default=list(ASSIGNMENTS), choices=list(ASSIGNMENTS))
    ap.add_argument("--block-size", type=int, default=None,
                    help="also train every SGS setting with SGS on temporal blocks of this length")
    ap.add_argument("--temporal-padding", choices=["zeros"], default=None,
                    help="also train every adaptive SGS setting with zero temporal padding before SGS (the default is replicate)")
    ap.add_argument("--sizes", nargs=3, type=int, default=[384, 96, 192], metavar=("TRAIN", "VAL", "TEST"))
    ap.add_argument("--max-epochs", type=int, default=60)
    ap.add_argument("--min-epochs", type=int, default=60)
    ap.add_argument("--patience", type=int, default=12)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--jobs", type=int, default=1, help="runs in parallel, one CPU thread each (default 1)")
    ap.add_argument("--cache", default="data_cache/sgs_tradeoff")
    ap.add_argument("--out", default="benchmarks/results/sgs_tradeoff.json")
    ap.add_argument("--markdown", default="benchmarks/results/sgs_tradeoff.md")
    ap.add_argument("--cached-only", action="store_true",
                    help="train nothing: write the results of the runs already in the cache, leave the rest out")
    ap.add_argument("--quick", action="store_true", help="smoke run: tiny data, 2 epochs, B = 4 and 32, one seed")
    args = ap.parse_args(argv)
    if args.quick:
        args.sizes, args.max_epochs, args.min_epochs, args.patience = [24, 8, 8], 2, 1, 1
        args.seeds, args.bins = args.seeds[:1], [4, 32]
        args.cache = os.path.join(args.cache, "quick")
    torch.set_num_threads(1)
    os.makedirs(args.cache, exist_ok=True)
    cache_path = os.path.join(args.cache, "runs.jsonl")
    base = dict(sizes=list(args.sizes), augment="d4+roll", schedule="cosine", max_epochs=args.max_epochs, min_epochs=args.min_epochs,
                patience=args.patience, batch=args.batch, lr=args.lr, backbone=BACKBONE, cache=args.cache)
    specs = []
    for seed in args.seeds:
        for dataset in args.datasets:
            specs.append({**base, "dataset": dataset, "seed": seed, "assignment": None, "num_bins": None})
            for b in sorted(args.bins, reverse=True):  # B = 32 first: the A.4 evaluations come with it
                for a in args.assignments:
                    spec = {**base, "dataset": dataset, "seed": seed, "assignment": a, "num_bins": b}
                    specs.append(spec)
                    if args.temporal_padding and a != "fixed":  # fixed pooling reads no embedding
                        specs.append({**spec, "temporal_padding": args.temporal_padding})
                    if args.block_size and b * args.block_size >= FRAMES:  # >= 1 bin per block
                        specs.append({**spec, "block_size": args.block_size})
    done = read_cache(cache_path)
    if args.cached_only:
        specs = [s for s in specs if spec_key(s) in done]
    todo = [s for s in specs if spec_key(s) not in done]
    print(f"# SGS trade-off: {len(specs)} runs, {len(specs) - len(todo)} cached, {len(todo)} to train "
          f"({args.jobs} in parallel, 1 thread each); load average {os.getloadavg()}", flush=True)
    for seed in args.seeds:  # generate + decode the data once, before the workers start
        for dataset in args.datasets:
            load_data(args.cache, dataset, seed, tuple(args.sizes))
    t0 = time.perf_counter()

    def finished(spec, record):
        record = {**record, "jobs": args.jobs, "load_end": os.getloadavg()[0]}  # how this run was trained
        with open(cache_path, "a") as f:
            f.write(json.dumps({"key": spec_key(spec), "record": record}) + "\n")
        done[spec_key(spec)] = record
        print(f"  {record['dataset']:10s} seed {record['seed']} {str(spec['assignment']):11s} B={record['num_bins']} "
              f"block={spec.get('block_size')}: "
              f"top-1 {fmt_pct(record['top1'])} %, {record['gmacs']:.4f} GMACs, B' {record['mean_bins']:.1f}, "
              f"{record['epochs']} epochs, CPU {record['cpu_s']:.0f} s, wall {record['wall_s']:.0f} s "
              f"(load {os.getloadavg()[0]:.1f})", flush=True)

    if args.jobs > 1 and len(todo) > 1:
        with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = {pool.submit(run_one, s): s for s in todo}
            for fut in as_completed(futures):
                finished(futures[fut], fut.result())
    else:
        for s in todo:
            finished(s, run_one(s))
    records = [done[spec_key(s)] for s in specs]
    rows = [{k: r[k] for k in ("dataset", "sgs", "num_bins", "seed", "top1", "gmacs")} for r in records]
    a4_rows = [{"dataset": r["dataset"], "sgs": r["sgs"], "train_num_bins": 32, "num_bins": e["num_bins"],
                "seed": r["seed"], "top1": e["top1"], "gmacs": e["gmacs"]} for r in records for e in r.get("a4", [])]
    details = [{k: v for k, v in r.items() if k not in ("top1", "gmacs", "a4")} for r in records]
    trained = run_conditions(records, len(todo))
    conditions = {"backbone": BACKBONE, "frames": FRAMES, "size": SIZE, "sizes_train_val_test": list(args.sizes),
                  "max_epochs": args.max_epochs, "min_epochs": args.min_epochs, "patience": args.patience,
                  "batch": args.batch, "lr": args.lr, "threads_per_run": 1, "torch": torch.__version__, **trained}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"rows": rows, "a4_rows": a4_rows, "details": details, "conditions": conditions}, f, indent=1)
    text = tables(records, args.seeds) + "\n" + verdict_lines(records) + "\n" + goal_lines(records)
    if any(r["sgs"] is None for r in records):
        text += (f"\n\nThe default assignment ({DEFAULT_ASSIGNMENT!r}) against fixed pooling and no SGS:\n\n"
                 + default_table(records, DEFAULT_ASSIGNMENT))
    if any("train_top1" in r for r in records):
        text += "\n\nREADME tables:\n\n" + "\n\n".join(
            readme_table(records, d) for d in sorted({r["dataset"] for r in records})
            if any(r["sgs"] is None for r in records if r["dataset"] == d))
    head = (f"SGS trade-off ({len(records)} runs, {trained['trained_now']} trained by this invocation and "
            f"{trained['from_cache']} read from the run cache; {BACKBONE}, 1 thread per run, runs in parallel: "
            f"{trained['jobs']}; load average when the runs ended: {trained['load_end']}; total CPU "
            f"{sum(r['cpu_s'] for r in records) / 60:.0f} min; this invocation "
            f"{(time.perf_counter() - t0) / 60:.1f} min wall)\n")
    with open(args.markdown, "w") as f:
        f.write(head + text + "\n")
    print("\n" + head + text)


if __name__ == "__main__":
    main()
