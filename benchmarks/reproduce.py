"""Reproduce the seeds' comparisons at small scale on the embedded synthetic data (issue 6), on CPU.

    python benchmarks/reproduce.py --quick --out benchmarks/results/quick.json      # uniform vs TSS, 1 seed
    python benchmarks/reproduce.py --tables S.1,S.4 --seeds 3 --out FILE            # subsets
    python benchmarks/reproduce.py --seeds 3 --out FILE                             # everything

Tables (seed 000 §S.2-S.3, seed 002 §A): S.1 (uniform vs TSS γ_s ∈ {0, 0.5, 1, 10}, test γ_p ∈ {0, 1e6},
epochs under early stopping), S.2 (clean vs augmented scoring), S.3 (clip length 8/16/32 × γ ∈ {0, 1, 10};
γ = 0 is uniform training, γ_s = γ_p = γ otherwise), S.4 (binary variant: uniform, TSS γ = 2, sampling only
γ_s = 2 / γ_p = 0, prior-guided; EER accuracy and epochs), S.2-fig (REINFORCE vs TSS hit rate per epoch),
A.3 / A.4 (SGS after res2 of the small 3D CNN, as in the seed's 3D ResNet-18, on the redundancy variant,
B ∈ {4, 8, 16, 32}: trained with each B, and trained with 32 then tested with fewer; accuracy and average
GMACs per test clip; clips of T = 32 frames), long (uniform vs TSS γ_s ∈ {1, 10} for 60 epochs without early
stopping).

Every trained model is one ``run_experiment`` call; its result is appended to a cache (``--cache``, JSON
lines keyed by the full config) so interrupted or partial runs resume and tables share runs (e.g. S.2 reuses
the S.1 runs with the same settings). Datasets are generated once per (variant, seed) with ``ensure_dataset``.
Printed: markdown tables, mean ± std over seeds (std = sample std; "±0" with one seed means n = 1).
``--out FILE``: ``{"rows": [{"method", "gamma_s", "gamma_p", "video_acc", "hit_rate", "epochs", "gmacs",
...}], ...}`` with accuracies as fractions, one row per (run, test γ_p).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import sys
import time
from typing import Any, Dict, Iterable, List, Optional

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # runner.py beside this file

from runner import pooling_key, run_experiment  # noqa: E402

ALL_TABLES = ("S.1", "S.4", "A.3", "A.4", "S.2", "S.2-fig", "S.3", "long")
LONG_EPOCHS = 60  # table "long": a first probe on this data saw TSS pull ahead of uniform only after ~20 epochs

# Dataset of each variant at reproduction scale (32x32, so that a run fits in minutes on 2 cores).
DATA = {
    "multiclass": dict(variant="multiclass", size=32, num_train=240, num_val=60, num_test=120, min_frames=48,
                       max_frames=128, event_fraction=(0.15, 0.25)),
    "binary": dict(variant="binary", size=32, num_train=240, num_val=60, num_test=120, min_frames=48,
                   max_frames=128, event_fraction=(0.15, 0.25)),
    "redundancy": dict(variant="redundancy", size=32, num_train=240, num_val=60, num_test=120, min_frames=48,
                       max_frames=128, event_fraction=(0.15, 0.25)),
}

# Shared training settings (tuned on the multiclass variant, see benchmarks/results/README.md).
BASE = dict(clip_len=16, crop_size=28, short_side=32, batch_size=8, lr=5e-4, max_epochs=30,
            warmup_epochs=3, exploration_epochs=5, test_gamma_p=[0.0, 1.0, 1e6], gmacs_clips=16)
EARLY = dict(early_stopping=True, val_every=2, patience=3, min_epochs=20)  # the model needs ~15 epochs to start
# Tables A.3 / A.4: clips of T = 32 frames, so that B = 32 = T is the "keep every feature map" end of the range
# (seed 002 §A: "By setting B = T, the SGS module can keep all feature maps").
SGS_CLIP_LEN = 32


def data_cfg(variant: str, seed: int, root: str, scale: float = 1.0) -> Dict[str, Any]:
    d = dict(DATA[variant], seed=seed)
    if scale != 1.0:  # fewer videos (smoke tests)
        for k in ("num_train", "num_val", "num_test"):
            d[k] = max(4, int(round(d[k] * scale)))
    d["root"] = os.path.join(root, f"{variant}_s{seed}")
    return d


def config_key(cfg: Dict[str, Any]) -> str:
    return hashlib.sha1(json.dumps(cfg, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _upgrade_keys(res: Dict[str, Any]) -> Dict[str, Any]:
    """A cached result written before the test results were keyed like the module's metrics ("1e+06" -> "gp1e06")."""
    def upgrade(test: Dict[str, Any]) -> Dict[str, Any]:
        return {k if k.startswith("gp") else pooling_key(float(k)): v for k, v in test.items()}
    res["test"] = upgrade(res["test"])
    if res.get("test_by_bins"):
        res["test_by_bins"] = {b: upgrade(t) for b, t in res["test_by_bins"].items()}
    return res


class Runner:
    """Runs configs through ``run_experiment``, caching results by config (JSON lines)."""

    def __init__(self, cache: Optional[str], verbose: bool = True, threads: Optional[int] = None):
        # ``threads`` (torch threads per run) is not part of a run's identity: it is left out of the cache key
        self.cache, self.verbose, self.results, self.threads = cache, verbose, {}, threads
        if cache and os.path.exists(cache):
            with open(cache) as f:
                for line in f:
                    if line.strip():
                        r = _upgrade_keys(json.loads(line))
                        self.results[r["key"]] = r

    def __call__(self, cfg: Dict[str, Any], label: str) -> Dict[str, Any]:
        key = config_key(cfg)
        if key in self.results:
            return self.results[key]
        t0 = time.time()
        if self.verbose:
            print(f"[{time.strftime('%H:%M:%S')}] run {label} ...", file=sys.stderr, flush=True)
        res = run_experiment(dict(cfg, threads=self.threads) if self.threads else cfg)
        res["key"], res["label"] = key, label
        if self.verbose:
            acc = {g: round(v.get("top1", float("nan")), 3) for g, v in res["test"].items()}
            print(f"[{time.strftime('%H:%M:%S')}]   done in {time.time() - t0:.0f}s: top1 {acc}, hit "
                  f"{res['hit_rate']}, epochs {res['epochs']}", file=sys.stderr, flush=True)
        self.results[key] = res
        if self.cache:
            os.makedirs(os.path.dirname(os.path.abspath(self.cache)), exist_ok=True)
            with open(self.cache, "a") as f:
                f.write(json.dumps(res, default=str) + "\n")
        return res


# ------------------------------------------------------------------------------------------ experiments
def method_cfg(method: str, gamma_s: float = 1.0, **over) -> Dict[str, Any]:
    cfg = dict(BASE, method=method, gamma_s=gamma_s if method in ("tss", "prior") else 0.0)
    cfg.update(over)
    return cfg


VAL_TARGET = 0.75  # "epochs needed" (S.4) = epochs trained when val top-1 first reached this


def epochs_to_target(res: Dict[str, Any], target: float = VAL_TARGET) -> Optional[int]:
    """Epochs trained when ``val/top1`` first reached ``target``; None if never (or no curve was recorded)."""
    for point in res.get("val_curve") or []:
        if point["val/top1"] >= target:
            return int(point["epoch"]) + 1
    return None


def rows_of(res: Dict[str, Any], table: str, gammas: Iterable[float], *, metric: str = "top1",
            **extra) -> List[Dict[str, Any]]:
    cfg = res["config"]
    extra.setdefault("epochs_to_val_target", epochs_to_target(res))
    out = []
    for g in gammas:
        t = res["test"][pooling_key(g)]
        out.append(dict(table=table, method=cfg["method"], gamma_s=cfg["gamma_s"], gamma_p=float(g),
                        video_acc=t[metric], top1=t["top1"], hit_rate=res["hit_rate"], epochs=res["epochs"],
                        gmacs=res["gmacs"], seed=cfg["seed"], clip_len=cfg["clip_len"], scoring=cfg["scoring"],
                        **extra))
    return out


def run_tables(tables: List[str], seeds: List[int], runner: Runner, data_root: str, quick: bool,
               data_scale: float = 1.0, clip_lens: Iterable[int] = (8, 16, 32)) -> Dict[str, Any]:
    rows: List[Dict[str, Any]] = []
    curves: Dict[str, List[List[Optional[float]]]] = {}
    missing: List[str] = []

    def go(table, cfg, label, gammas, **kw):
        try:
            res = runner(cfg, f"{table} {label}")
        except Exception as err:  # keep going: a table with a failed run says so
            missing.append(f"{table} {label}: {type(err).__name__}: {err}")
            print(f"  FAILED {table} {label}: {err}", file=sys.stderr, flush=True)
            return None
        rows.extend(rows_of(res, table, gammas, label=label, **kw))
        return res

    for seed in seeds:
        mc = data_cfg("multiclass", seed, data_root, data_scale)
        if quick:
            for m in ("uniform", "tss"):
                go("quick", method_cfg(m, 1.0, data=mc, seed=seed), m if m == "uniform" else "tss g_s=1",
                   [0.0, 1.0, 1e6])
            continue
        early = dict(EARLY)
        if "S.1" in tables or "S.2" in tables:
            go("S.1", method_cfg("uniform", data=mc, seed=seed, **early), "uniform", [0.0, 1.0, 1e6])
        if "S.1" in tables:
            for g in (0.0, 0.5, 1.0, 10.0):
                go("S.1", method_cfg("tss", g, data=mc, seed=seed, **early), f"g_s={g:g}", [0.0, 1.0, 1e6])
        if "S.4" in tables:
            bc = data_cfg("binary", seed, data_root, data_scale)
            b = dict(early, data=bc, seed=seed, test_gamma_p=[0.0, 2.0, 1e6])
            go("S.4", method_cfg("uniform", **b), "uniform (g_p=0)", [0.0], metric="eer_acc")
            res = go("S.4", method_cfg("tss", 2.0, **b), "TSS g_s=g_p=2", [2.0], metric="eer_acc")
            if res is not None:
                rows.extend(rows_of(res, "S.4", [0.0], metric="eer_acc", label="sampling only g_s=2, g_p=0"))
            go("S.4", method_cfg("prior", 10.0, **b), "prior-guided g_s=10 (g_p=0)", [0.0], metric="eer_acc")
        if "A.3" in tables or "A.4" in tables:
            rc = data_cfg("redundancy", seed, data_root, data_scale)
            s = dict(data=rc, seed=seed, gmacs_clips=32, clip_len=SGS_CLIP_LEN)
            if "A.3" in tables:
                go("A.3", method_cfg("uniform", **s), "no SGS", [1.0], num_bins=None)
                for b in (4, 8, 16):
                    go("A.3", method_cfg("uniform", sgs={"num_bins": b}, **s), f"SGS B={b}", [1.0], num_bins=b)
            res = go("A.3", method_cfg("uniform", sgs={"num_bins": 32}, test_num_bins=[4, 8, 16], **s),
                     "SGS B=32", [1.0], num_bins=32)
            if res is not None and "A.4" in tables:
                for b in (4, 8, 16):
                    t = res["test_by_bins"][str(b)][pooling_key(1.0)]
                    rows.append(dict(table="A.4", method="uniform", gamma_s=0.0, gamma_p=1.0, video_acc=t["top1"],
                                     top1=t["top1"], hit_rate=res["hit_rate"], epochs=res["epochs"],
                                     gmacs=res["gmacs_by_bins"][str(b)], seed=seed, clip_len=res["config"]["clip_len"],
                                     scoring="clean", label=f"trained B=32, tested B={b}", num_bins=b))
        if "S.2" in tables:
            go("S.2", method_cfg("tss", 10.0, data=mc, seed=seed, **early), "clean scoring g=10", [0.0, 1.0, 1e6])
            go("S.2", method_cfg("tss", 10.0, scoring="augmented", data=mc, seed=seed, **early),
               "augmented scoring g=10", [0.0, 1.0, 1e6])
        if "S.2-fig" in tables:
            for label, cfg in (("tss g_s=1", method_cfg("tss", 1.0, data=mc, seed=seed)),
                               ("reinforce", method_cfg("reinforce", data=mc, seed=seed))):
                res = go("S.2-fig", cfg, label, [1.0])
                if res is not None:
                    curves.setdefault(label, []).append(res["hit_rate_per_epoch"])
        if "long" in tables:
            for m, g in (("uniform", 0.0), ("tss", 1.0), ("tss", 10.0)):
                go("long", method_cfg(m, g, data=mc, seed=seed, max_epochs=LONG_EPOCHS),
                   "uniform" if m == "uniform" else f"tss g_s={g:g}", [0.0, 1.0, 1e6])
        if "S.3" in tables:
            for F in clip_lens:
                for g in (0.0, 1.0, 10.0):
                    m = "uniform" if g == 0 else "tss"
                    tg = [0.0, 1.0, 10.0, 1e6]
                    go("S.3", method_cfg(m, g, clip_len=F, data=mc, seed=seed, test_gamma_p=tg),
                       f"F={F} g={g:g}", tg)
    return {"rows": rows, "curves": curves, "missing": missing}


# ------------------------------------------------------------------------------------------ tables
def mean_std(values: List[Optional[float]], scale: float = 1.0, digits: int = 1) -> str:
    v = [x * scale for x in values if x is not None and not (isinstance(x, float) and math.isnan(x))]
    if not v:
        return "–"
    m = sum(v) / len(v)
    if len(v) == 1:
        return f"{m:.{digits}f}"
    sd = math.sqrt(sum((x - m) ** 2 for x in v) / (len(v) - 1))
    return f"{m:.{digits}f} ± {sd:.{digits}f}"


def _select(rows, table, label=None, gamma_p=None):
    return [r for r in rows if r["table"] == table and (label is None or r["label"] == label)
            and (gamma_p is None or r["gamma_p"] == gamma_p)]


def _labels(rows, table):
    seen = []
    for r in rows:
        if r["table"] == table and r["label"] not in seen:
            seen.append(r["label"])
    return seen


def _n(rows):
    return len({r["seed"] for r in rows})


def markdown(result: Dict[str, Any]) -> str:
    rows, out = result["rows"], []
    pct = lambda rs, key="video_acc": mean_std([r[key] for r in rs], 100.0)  # noqa: E731
    for table, title in (("quick", "Quick: uniform vs TSS (γ_s = 1), fixed epochs"),
                         ("S.1", "Table S.1: sampling γ_s × test pooling γ_p (video top-1 %, early stopping)"),
                         ("long", f"Longer training: uniform vs TSS, {LONG_EPOCHS} epochs, no early stopping "
                                  "(video top-1 %)")):
        if not _select(rows, table):
            continue
        out += [f"### {title}", "", "| training | n | γ_p = 0 | γ_p = 1 | γ_p = 1e6 | hit rate (e ≥ W+E) | epochs |",
                "|---|---|---|---|---|---|---|"]
        for lab in _labels(rows, table):
            rs = _select(rows, table, lab)
            out.append(f"| {lab} | {_n(rs)} | " + " | ".join(pct(_select(rows, table, lab, g)) for g in (0.0, 1.0, 1e6))
                       + f" | {mean_std([r['hit_rate'] for r in _select(rows, table, lab, 0.0)], 1, 2)}"
                       f" | {mean_std([r['epochs'] for r in _select(rows, table, lab, 0.0)], 1, 1)} |")
        out.append("")
    if _select(rows, "S.2"):
        out += ["### Table S.2: clean vs augmented scoring (γ_s = 10; video top-1 %)", "",
                "| training | n | γ_p = 0 | γ_p = 1 | γ_p = 1e6 | hit rate | epochs |", "|---|---|---|---|---|---|---|"]
        for table, lab in [("S.1", "uniform")] + [("S.2", l) for l in _labels(rows, "S.2")]:
            rs = _select(rows, table, lab)
            if not rs:
                continue
            cells = [pct(_select(rows, table, lab, g)) if _select(rows, table, lab, g) else "–" for g in (0.0, 1.0, 1e6)]
            out.append(f"| {lab} | {_n(rs)} | " + " | ".join(cells)
                       + f" | {mean_std([r['hit_rate'] for r in _select(rows, table, lab, 0.0)], 1, 2)}"
                       f" | {mean_std([r['epochs'] for r in _select(rows, table, lab, 0.0)], 1, 1)} |")
        out.append("")
    if _select(rows, "S.3"):
        out += ["### Table S.3: clip length × γ (γ = 0: uniform training, average pooling; else γ_s = γ_p = γ; "
                "video top-1 %, 30 epochs)", "", "| γ | F = 8 | F = 16 | F = 32 |", "|---|---|---|---|"]
        for g in (0.0, 1.0, 10.0):
            cells = [pct(_select(rows, "S.3", f"F={F} g={g:g}", g)) for F in (8, 16, 32)]
            out.append(f"| {g:g} | " + " | ".join(cells) + " |")
        for gp in (1.0, 10.0):  # the same uniform models under TSS's test pooling: the sampler's share alone
            cells = [pct(_select(rows, "S.3", f"F={F} g=0", gp)) for F in (8, 16, 32)]
            out.append(f"| 0, tested at γ_p = {gp:g} | " + " | ".join(cells) + " |")
        out += ["", "Seeds per column (F = 8 / 16 / 32): " + " / ".join(
            str(_n(_select(rows, "S.3", f"F={F} g=0"))) for F in (8, 16, 32)) + "."]
        out += ["", "| γ (hit rate) | F = 8 | F = 16 | F = 32 |", "|---|---|---|---|"]
        for g in (0.0, 1.0, 10.0):
            cells = [mean_std([r["hit_rate"] for r in _select(rows, "S.3", f"F={F} g={g:g}", g)], 1, 2) for F in (8, 16, 32)]
            out.append(f"| {g:g} | " + " | ".join(cells) + " |")
        out.append("")
    if _select(rows, "S.4"):
        out += ["### Table S.4: binary variant (EER accuracy %, early stopping)", "",
                f"| method | n | EER acc. | hit rate | epochs | epochs to val top-1 ≥ {100 * VAL_TARGET:.0f} % |",
                "|---|---|---|---|---|---|"]
        for lab in _labels(rows, "S.4"):
            rs = _select(rows, "S.4", lab)
            reached = [r["epochs_to_val_target"] for r in rs if r.get("epochs_to_val_target") is not None]
            to = mean_std(reached, 1, 1) + (f" ({len(reached)}/{len(rs)} runs reached it)" if len(reached) < len(rs)
                                            else "")
            out.append(f"| {lab} | {_n(rs)} | {pct(rs)} | {mean_std([r['hit_rate'] for r in rs], 1, 2)} | "
                       f"{mean_std([r['epochs'] for r in rs], 1, 1)} | {to} |")
        out.append("")
    for table, title in (("A.3", "Table A.3: SGS trained with B bins (redundancy variant, γ_p = 1, 30 epochs)"),
                         ("A.4", "Table A.4: trained with B = 32, tested with fewer bins")):
        if not _select(rows, table):
            continue
        out += [f"### {title}", "", "| model | n | video top-1 % | GMACs / clip |", "|---|---|---|---|"]
        for lab in _labels(rows, table):
            rs = _select(rows, table, lab)
            out.append(f"| {lab} | {_n(rs)} | {pct(rs)} | {mean_std([r['gmacs'] for r in rs], 1, 4)} |")
        out.append("")
    if result.get("curves"):
        out += ["### Fig. S.2 (as a table): hit rate per epoch, REINFORCE vs TSS (γ_s = 1), mean over seeds", ""]
        labels = list(result["curves"])
        longest = max(len(c) for cs in result["curves"].values() for c in cs)
        out += ["| epoch | " + " | ".join(labels) + " |", "|---" * (len(labels) + 1) + "|"]
        for e in range(longest):
            cells = [mean_std([c[e] for c in result["curves"][l] if e < len(c)], 1, 2) for l in labels]
            out.append(f"| {e} | " + " | ".join(cells) + " |")
        out.append("")
    if result.get("missing"):
        out += ["### Runs that failed", ""] + [f"* {m}" for m in result["missing"]] + [""]
    return "\n".join(out)


def plot_curves(curves: Dict[str, List[List[Optional[float]]]], path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for label, cs in curves.items():
        for i, c in enumerate(cs):
            ax.plot(range(len(c)), [x if x is not None else float("nan") for x in c], label=label if i == 0 else None,
                    color="C0" if label.startswith("tss") else "C1", alpha=0.8)
    ax.set_xlabel("epoch")
    ax.set_ylabel("hit rate (clip overlaps event)")
    ax.set_ylim(0, 1)
    ax.legend()
    ax.set_title("Fig. S.2 analogue: REINFORCE vs TSS")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="one seed of uniform vs TSS (γ_s = 1), fixed epochs")
    ap.add_argument("--tables", default=",".join(ALL_TABLES), help=f"comma-separated subset of {ALL_TABLES}")
    ap.add_argument("--seeds", type=int, default=3, help="number of seeds (0..N-1); --quick uses 1")
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--out", help="write the rows as JSON here")
    ap.add_argument("--markdown", help="write the markdown tables here")
    ap.add_argument("--figure", help="write the Fig. S.2 analogue (PNG) here")
    ap.add_argument("--data-root", default="data_cache/repro", help="where the datasets are generated / reused")
    ap.add_argument("--cache", default="data_cache/repro/runs.jsonl", help="JSON-lines cache of finished runs ('' = none)")
    ap.add_argument("--max-epochs", type=int, default=None, help="override the epochs of every run (smoke tests)")
    ap.add_argument("--data-scale", type=float, default=1.0, help="scale the number of videos (smoke tests)")
    ap.add_argument("--clip-lens", default="8,16,32", help="Table S.3: clip lengths F to run (comma-separated)")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads per run (default 2; e.g. 1 to run two reproductions side by side)")
    args = ap.parse_args(argv)
    tables = [t.strip() for t in args.tables.split(",") if t.strip()]
    bad = set(tables) - set(ALL_TABLES)
    if bad:
        ap.error(f"--tables: unknown {sorted(bad)}; choose from {ALL_TABLES}")
    if args.max_epochs is not None:
        global LONG_EPOCHS
        BASE["max_epochs"] = LONG_EPOCHS = args.max_epochs
        EARLY["min_epochs"] = min(EARLY["min_epochs"], args.max_epochs)
    seeds = [args.first_seed] if args.quick else list(range(args.first_seed, args.first_seed + args.seeds))
    runner = Runner(args.cache or None, threads=args.threads)
    t0 = time.time()
    clip_lens = [int(f) for f in args.clip_lens.split(",") if f.strip()]
    result = run_tables(tables, seeds, runner, args.data_root, args.quick, args.data_scale, clip_lens)
    result["meta"] = {"command": "python benchmarks/reproduce.py " + " ".join(argv if argv is not None else sys.argv[1:]),
                      "machine": f"{platform.machine()} CPU, {os.cpu_count()} cores (shared), torch threads {args.threads or 2}",
                      "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                      "seconds": round(time.time() - t0, 1), "seeds": seeds, "tables": ["quick"] if args.quick else tables,
                      "load_avg": os.getloadavg() if hasattr(os, "getloadavg") else None}
    md = markdown(result)
    print(md)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1, default=str)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(md + "\n")
    if args.figure and result["curves"]:
        plot_curves(result["curves"], args.figure)
    return result


if __name__ == "__main__":
    main()
