"""The quickstart (``recipes/quickstart.yaml``, exactly as ``lightning-temporal fit`` runs it) over several seeds:
the README's quickstart figures as a range over seeds instead of one run.

    python benchmarks/quickstart_seeds.py --seeds 3                       # the README table (~10 min per seed)
    python benchmarks/quickstart_seeds.py --seeds 3 --save-figure         # + the README's sampling-map figure
    python benchmarks/quickstart_seeds.py --seeds 1 --small               # smoke test: tiny data, 10 epochs

Each seed sets ``seed_everything`` (model initialisation, augmentation) and the data module's sampler seed; the
synthetic videos are the same for every seed (generated once). Per seed it reads the run's ``metrics.csv``:
validation top-1 at the last validation and test top-1 of the best checkpoint (the recipe's
``test_after_fit``) at γ_p = 1 (softmax pooling), 0 (mean) and 1e6 (max); the TSS hit rate (share of the
training clips that overlap the event window) of the last epoch and its mean over the last five epochs, beside
the hit rate uniform sampling would have (computed from the manifest: for each video, the share of clip starts
whose clip overlaps the event). Printed: a markdown table (min–max over seeds, then each seed), with the CPU
time (``time.process_time``) and wall time of each run, the torch threads and the load average.
"""
from __future__ import annotations

import argparse
import csv
import os
import shutil
import sys
import time
from typing import Dict, List, Optional

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

import torch  # noqa: E402

from lightning_temporal.cli import run  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
RECIPE = os.path.join(ROOT, "recipes", "quickstart.yaml")
SMALL = ["--data.init_args.synthetic={root: data_cache/quickstart_small, size: 32, num_train: 6, num_val: 2, "
         "num_test: 2, min_frames: 24, max_frames: 32, event_fraction: [0.15, 0.25]}",
         "--data.init_args.clip_len=8", "--data.init_args.crop_size=24", "--trainer.max_epochs=10"]
GAMMAS = (("1", "top1"), ("0", "gp0/top1"), ("1e6", "gp1e06/top1"))
# what each figure is compared with
GOALS = {"val": "> 25 % (chance); higher is better", "test": "> 25 % (chance); higher is better",
         "hit": "above uniform sampling's expected hit rate"}


def _column(rows: List[Dict[str, str]], key: str) -> List[float]:
    return [float(r[key]) for r in rows if r.get(key, "") not in ("", None)]


def read_run(metrics_csv: str) -> Dict[str, Optional[float]]:
    """The figures of one run from its CSVLogger ``metrics.csv`` (fractions; None where not logged)."""
    with open(metrics_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    out: Dict[str, Optional[float]] = {}
    for stage in ("val", "test"):
        for gamma, key in GAMMAS:
            values = _column(rows, f"{stage}/{key}")
            out[f"{stage} γ_p={gamma}"] = values[-1] if values else None
    hits = _column(rows, "tss/hit_rate")
    out["hit rate, last epoch"] = hits[-1] if hits else None
    out["hit rate, last 5 epochs"] = sum(hits[-5:]) / len(hits[-5:]) if hits else None
    return out


def uniform_hit_rate(manifest_csv: str, span: int) -> float:
    """Expected share of uniformly drawn training clips ``[t, t + span)`` that overlap their video's event
    window ``[event_start, event_end)``, averaged over the videos with a known window."""
    with open(manifest_csv, newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("event_start") not in (None, "")]
    if not rows:
        return float("nan")
    n = torch.tensor([max(1, int(r["num_frames"]) - span + 1) for r in rows])
    es = torch.tensor([int(r["event_start"]) for r in rows])
    ee = torch.tensor([int(r["event_end"]) for r in rows])
    # starts t in [0, N): overlap when t < ee and t + span > es, i.e. max(0, es - span + 1) <= t <= min(N, ee) - 1
    lo = (es - span + 1).clamp(min=0)
    hi = torch.minimum(n, ee)
    return float(((hi - lo).clamp(min=0).float() / n.float()).mean())


def run_seed(seed: int, out_dir: str, extra: List[str]) -> Dict[str, object]:
    """One ``lightning-temporal fit`` of the quickstart with ``seed``; its figures, times and manifest."""
    save_dir = os.path.join(out_dir, f"seed{seed}")
    shutil.rmtree(save_dir, ignore_errors=True)
    args = ["fit", "--config", RECIPE, f"--seed_everything={seed}", f"--data.init_args.seed={seed}",
            f"--trainer.logger.init_args.save_dir={save_dir}", f"--trainer.default_root_dir={save_dir}",
            "--trainer.enable_progress_bar=false", *extra]
    wall, cpu = time.perf_counter(), time.process_time()
    cli = run(args)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    log_dir = cli.trainer.logger.log_dir
    figures = read_run(os.path.join(log_dir, "metrics.csv"))
    dm = cli.datamodule
    span = (dm.clip_len - 1) * dm.stride + 1
    maps = sorted(f for f in os.listdir(os.path.join(log_dir, "sampling_maps")))
    return {"seed": seed, "figures": figures, "wall_s": wall, "cpu_s": cpu, "log_dir": log_dir,
            "uniform_hit": uniform_hit_rate(dm._manifest_paths()["train"], span),
            "last_map": os.path.join(log_dir, "sampling_maps", maps[-1]) if maps else None}


def _pct(x: Optional[float], hit: bool) -> str:
    if x is None:
        return "–"
    return f"{x:.2f}" if hit else f"{100 * x:.1f} %"


def table(results: List[Dict[str, object]]) -> str:
    """Markdown: one row per figure, the range over seeds, each seed, and the goal."""
    seeds = [r["seed"] for r in results]
    head = "| figure | range over seeds | " + " | ".join(f"seed {s}" for s in seeds) + " | goal |"
    lines = [head, "|" + "---|" * (len(seeds) + 3)]
    for key in results[0]["figures"]:
        hit = key.startswith("hit")
        values = [r["figures"][key] for r in results]
        known = [v for v in values if v is not None]
        rng = f"{_pct(min(known), hit)} – {_pct(max(known), hit)}" if known else "–"
        goal = GOALS["hit" if hit else key.split()[0]]
        lines.append(f"| {key} | {rng} | " + " | ".join(_pct(v, hit) for v in values) + f" | {goal} |")
    uniform = results[0]["uniform_hit"]
    lines.append(f"| uniform sampling's expected hit rate | {uniform:.2f} | " + " | ".join("" for _ in seeds)
                 + " | the level TSS should rise above |")
    lines.append("| wall time per run | " + f"{min(r['wall_s'] for r in results):.0f} – "
                 f"{max(r['wall_s'] for r in results):.0f} s | " + " | ".join(f"{r['wall_s']:.0f} s" for r in results)
                 + " | (not a goal) |")
    lines.append("| CPU time per run | " + f"{min(r['cpu_s'] for r in results):.0f} – "
                 f"{max(r['cpu_s'] for r in results):.0f} s | " + " | ".join(f"{r['cpu_s']:.0f} s" for r in results)
                 + " | (not a goal) |")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> List[Dict[str, object]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3, help="number of seeds (0, 1, ...)")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--small", action="store_true", help="tiny data and 10 epochs: a smoke test")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (pinned)")
    parser.add_argument("--out", default="outputs/quickstart_seeds", help="folder of the runs")
    parser.add_argument("--save-figure", action="store_true",
                        help="copy the first seed's last sampling map to benchmarks/results/ (the README figure)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    extra = SMALL if args.small else []
    results = [run_seed(s, args.out, extra) for s in range(args.first_seed, args.first_seed + args.seeds)]
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    print(f"\nquickstart{' (small)' if args.small else ''}, {len(results)} seed(s), torch threads {args.threads}, "
          f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}\n")
    print(table(results))
    if args.save_figure and results[0]["last_map"]:
        dest = os.path.join(ROOT, "benchmarks", "results", "quickstart_sampling_map_epoch029.png")
        shutil.copyfile(results[0]["last_map"], dest)
        print(f"\nsampling map of seed {results[0]['seed']}: {dest}")
    return results


if __name__ == "__main__":
    main()
