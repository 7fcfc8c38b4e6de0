"""Does ``bootstrap`` find the event sooner than the seed's TSS? Uniform vs ``tss`` vs ``bootstrap`` on the
synthetic data, its default and harder variants, several seeds; hit rate per epoch and what the extra clean
scoring costs.

    python benchmarks/tss_bootstrap.py --variants default,short,crowded --seeds 0,1,2 --cache FILE   # train
    python benchmarks/tss_bootstrap.py --report --cache FILE --out benchmarks/results/tss_bootstrap  # tables

Each run is one ``runner.run_experiment`` call (cached by its settings in ``--cache``, JSON lines: several
processes may train different seeds into their own cache files; ``--report`` reads any number of them).

Compute. A training clip costs a forward and a backward pass (about 3 forward passes); a clean-scored clip one
forward pass without gradients. The report counts, per video, the forward-pass equivalents spent up to each epoch
(3 per trained clip + 1 per scored clip: ``tss`` scores 1 clip per video per epoch after warm-up, ``bootstrap`` k
from epoch 0) and gives the first epoch with hit rate > 0.5 together with that count, beside the measured CPU
seconds of each fit (``time.process_time``, threads pinned to 1) and wall seconds.
"""
from __future__ import annotations

import argparse
import glob
import hashlib
import json
import math
import os
import statistics
import sys
import time
from typing import Any, Dict, List, Optional

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from runner import run_experiment  # noqa: E402

#: the data of each variant (32 x 32 grey videos; 4 motion classes)
VARIANTS: Dict[str, Dict[str, Any]] = {
    # the quickstart's data, smaller
    "default": dict(min_frames=48, max_frames=128, event_fraction=(0.15, 0.25)),
    # shorter events in longer videos
    "short": dict(min_frames=96, max_frames=160, event_fraction=(0.08, 0.14)),
    # more distractors and more noise
    "crowded": dict(min_frames=48, max_frames=128, event_fraction=(0.12, 0.2), num_distractors=(2, 3),
                    noise=0.06),
}
DATA = dict(variant="multiclass", size=32, num_train=96, num_val=8, num_test=64)
TRAIN = dict(clip_len=16, crop_size=28, short_side=32, batch_size=8, lr=1e-3, warmup_epochs=3,
             exploration_epochs=5, test_gamma_p=[0.0, 1.0, 1e6], gmacs_clips=0, threads=1, track_videos=0)
METHODS = {
    "uniform": dict(method="uniform"),
    "tss": dict(method="tss", gamma_s=1.0),
    "bootstrap": dict(method="bootstrap", gamma_s=1.0,
                      policy_args={"positions_per_video": 3, "epsilon": 0.1, "patience": 2, "z": 2.0, "normalise": True}),
}


def config(variant: str, seed: int, method: str, epochs: int, data_dir: str) -> Dict[str, Any]:
    data = dict(DATA, **VARIANTS[variant], seed=seed, root=os.path.join(data_dir, f"{variant}_s{seed}"))
    return dict(TRAIN, **METHODS[method], data=data, seed=seed, max_epochs=epochs)


def _key(cfg: Dict[str, Any]) -> str:
    return hashlib.sha1(json.dumps(cfg, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _load(paths: List[str]) -> Dict[str, Dict[str, Any]]:
    out = {}
    for path in paths:
        if os.path.exists(path):
            with open(path) as f:
                for line in f:
                    if line.strip():
                        r = json.loads(line)
                        out[r["key"]] = r
    return out


def train(args) -> None:
    done = _load([args.cache])
    for seed in args.seeds:
        for variant in args.variants:
            for method in args.methods:  # methods interleaved within each (seed, variant)
                cfg = config(variant, seed, method, args.epochs, args.data_dir)
                key = _key(cfg)
                if key in done:
                    continue
                print(f"[{time.strftime('%H:%M:%S')}] {variant} seed {seed} {method} ... load "
                      f"{os.getloadavg()[0]:.1f}", file=sys.stderr, flush=True)
                res = run_experiment(cfg)
                res.update(key=key, variant=variant, seed=seed, method=method, load=os.getloadavg()[0])
                res.pop("starts_per_epoch", None)
                with open(args.cache, "a") as f:
                    f.write(json.dumps(res, default=float) + "\n")
                print(f"    done in {res['seconds']}s: top1 gp1 {res['test']['gp1']['top1']:.3f}, hit per epoch "
                      f"{[round(h, 2) for h in res['hit_rate_per_epoch']]}", file=sys.stderr, flush=True)


def _compute_per_video(res: Dict[str, Any]) -> List[float]:
    """Forward-pass equivalents per video spent up to the end of each epoch (3 per trained clip, 1 per scored)."""
    n = res["config"]["data"]["num_train"]
    total, out = 0.0, []
    for scored in res["scored_per_epoch"]:
        total += 3.0 + scored / n
        out.append(total)
    return out


def _first_above(hits: List[Optional[float]], level: float = 0.5) -> Optional[int]:
    return next((e for e, h in enumerate(hits) if h is not None and h > level), None)


def _first_run_above(hits: List[Optional[float]], level: float = 0.5, run: int = 3) -> Optional[int]:
    """The first epoch that starts ``run`` epochs in a row with hit rate > ``level`` (robust to one lucky epoch)."""
    ok = [h is not None and h > level for h in hits]
    return next((e for e in range(len(ok) - run + 1) if all(ok[e:e + run])), None)


def _mean_sd(xs: List[float]) -> str:
    xs = [x for x in xs if x is not None and not (isinstance(x, float) and math.isnan(x))]
    if not xs:
        return "-"
    if len(xs) == 1:
        return f"{xs[0]:.3f}"
    return f"{statistics.mean(xs):.3f} ± {statistics.stdev(xs):.3f}"


LABELS = ("uniform", "tss", "bootstrap-raw", "bootstrap")


def _label(r: Dict[str, Any]) -> str:
    """The method of a run; ``bootstrap-raw``: the bootstrap policy drawing from the raw table (normalise off)."""
    if r["method"] == "bootstrap" and not (r["config"].get("policy_args") or {}).get("normalise", False):
        return "bootstrap-raw"
    return r["method"]


def report(args) -> None:
    runs = list(_load(sorted(set(glob.glob(args.cache)) | {args.cache})).values())
    for r in runs:
        r["method"] = _label(r)
    rows = []
    for r in sorted(runs, key=lambda r: (r["config"]["max_epochs"], list(VARIANTS).index(r["variant"]), r["seed"],
                                         LABELS.index(r["method"]))):
        hits = r["hit_rate_per_epoch"]
        comp = _compute_per_video(r)
        first = _first_above(hits)
        rows.append({
            "variant": r["variant"], "seed": r["seed"], "method": r["method"], "epochs": r["epochs"],
            "max_epochs": r["config"]["max_epochs"],
            "top1": {g: v["top1"] for g, v in r["test"].items()},
            "hit_rate_per_epoch": hits, "phase_per_epoch": r["phase_per_epoch"],
            "scored_per_epoch": r["scored_per_epoch"], "clean_top1_per_epoch": r.get("clean_top1_per_epoch"),
            "forward_equivalents_per_video": comp,
            "first_epoch_hit_above_0.5": first,
            "first_epoch_of_3_above_0.5": _first_run_above(hits),
            "forward_equivalents_at_first": comp[first] if first is not None else None,
            "hit_rate_last5": statistics.mean([h for h in hits[-5:] if h is not None]),
            "hit_rate_exploitation": r["hit_rate"],
            "fit_cpu_seconds": r.get("fit_cpu_seconds"), "fit_seconds": r.get("fit_seconds"), "load": r.get("load"),
        })
    with open(args.out + ".json", "w") as f:
        json.dump({"settings": {"data": DATA, "variants": VARIANTS, "train": TRAIN, "methods": METHODS},
                   "rows": rows}, f, indent=1, default=str)
    lines = ["# TSS bootstrap: uniform vs tss vs bootstrap (benchmarks/tss_bootstrap.py)", "",
             f"Data: synthetic multiclass, {DATA['num_train']} train / {DATA['num_test']} test videos of 32x32, "
             "4 classes; simple3d, clip 16, Adam lr 1e-3, batch 8, one torch thread per run; "
             "tss: W = 3, E = 5, γ_s = 1; bootstrap: k = 3 scored positions per video per epoch, ε = 0.1, gate "
             "patience 2 at z = 2 above chance, each video's table standardised before the softmax (bootstrap-raw: "
             "the same on the raw table, the first version). Hit rate: fraction of the epoch's trained clips overlapping the "
             "event. Compute: forward-pass equivalents per video (3 per trained clip, 1 per clean-scored clip).", "",
             "## Per run", "",
             "| epochs | variant | seed | method | top-1 γ_p = 0 / 1 / 1e6 | first epoch hit > 0.5 (fwd-eq./video) | "
             "hit rate, last 5 epochs | hit rate per epoch | fit CPU s |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        t = r["top1"]
        first = ("never" if r["first_epoch_hit_above_0.5"] is None else
                 f"{r['first_epoch_hit_above_0.5']} ({r['forward_equivalents_at_first']:.0f})")
        per = " ".join(f"{h:.2f}" for h in r["hit_rate_per_epoch"])
        lines.append(f"| {r['max_epochs']} | {r['variant']} | {r['seed']} | {r['method']} | "
                     f"{t.get('gp0', 0):.3f} / {t.get('gp1', 0):.3f}"
                     f" / {t.get('gp1e06', 0):.3f} | {first} | {r['hit_rate_last5']:.3f} | {per} | "
                     f"{r['fit_cpu_seconds']} |")
    lines += ["", "## Mean ± sd over seeds", "",
              "| epochs | variant | method | seeds | top-1 γ_p = 1 | top-1 γ_p = 1e6 | hit rate, last 5 epochs | "
              "first epoch hit > 0.5 (runs reaching it) | first of 3 epochs in a row > 0.5 (runs) | fit CPU s |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for ep, v, m in [(e, v, m) for e in sorted({r["max_epochs"] for r in rows}) for v in VARIANTS for m in LABELS]:
        sub = [r for r in rows if r["variant"] == v and r["method"] == m and r["max_epochs"] == ep]
        if sub:
            firsts = [r["first_epoch_hit_above_0.5"] for r in sub if r["first_epoch_hit_above_0.5"] is not None]
            runs3 = [r["first_epoch_of_3_above_0.5"] for r in sub if r["first_epoch_of_3_above_0.5"] is not None]
            lines.append(f"| {ep} | {v} | {m} | {len(sub)} | {_mean_sd([r['top1'].get('gp1') for r in sub])} | "
                         f"{_mean_sd([r['top1'].get('gp1e06') for r in sub])} | "
                         f"{_mean_sd([r['hit_rate_last5'] for r in sub])} | "
                         f"{_mean_sd([float(x) for x in firsts])} ({len(firsts)}/{len(sub)}) | "
                         f"{_mean_sd([float(x) for x in runs3])} ({len(runs3)}/{len(sub)}) | "
                         f"{_mean_sd([r['fit_cpu_seconds'] for r in sub])} |")
    with open(args.out + ".md", "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--data-dir", default="data_cache/tss_bootstrap")
    p.add_argument("--cache", default="benchmarks/results/tss_bootstrap_runs.jsonl",
                   help="JSON lines of the runs (--report: a glob of such files)")
    p.add_argument("--report", action="store_true")
    p.add_argument("--out", default="benchmarks/results/tss_bootstrap")
    args = p.parse_args(argv)
    args.variants = args.variants.split(",")
    args.methods = args.methods.split(",")
    args.seeds = [int(s) for s in args.seeds.split(",")]
    import torch
    torch.set_num_threads(1)
    report(args) if args.report else train(args)


if __name__ == "__main__":
    main()
