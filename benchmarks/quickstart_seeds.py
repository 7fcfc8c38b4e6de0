"""The quickstart (``recipes/quickstart.yaml``, exactly as ``lightning-temporal fit`` runs it) over several seeds:
the README's quickstart figures as a range over seeds instead of one run.

    python benchmarks/quickstart_seeds.py --seeds 5 --threads 1 default \
        --results benchmarks/results/quickstart_seeds.json                  # the README table (~3 min per run)
    python benchmarks/quickstart_seeds.py --from-results benchmarks/results/quickstart_seeds.json  # reprint it
    python benchmarks/quickstart_seeds.py --seeds 3 --save-figure         # + the README's sampling-map figure
    python benchmarks/quickstart_seeds.py --seeds 1 --small               # smoke test: tiny data, 10 epochs

Each seed sets ``seed_everything`` (model initialisation, augmentation) and the data module's sampler seed; the
synthetic videos are the same for every seed (generated once). Per seed it reads the run's ``metrics.csv``:
validation top-1 at the last validation and test top-1 of the best checkpoint (the recipe's
``test_after_fit``) at γ_p = 1 (softmax pooling), 0 (mean) and 1e6 (max); the TSS hit rate (share of the
training clips that overlap the event window) of the last epoch and its mean over the last five epochs, beside
the hit rate uniform sampling would have (computed from the manifest: for each video, the share of clip starts
whose clip overlaps the event). Printed: a markdown table (min–max over all runs, then each run), with the CPU
time (``time.process_time``) and wall time of each run, the torch threads and the load average.

Thread settings (``--threads``): each value is a number of torch threads or ``default``, the number torch picks
by itself in a fresh process on this machine (``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` unset; 2 on a 2-core
machine). The thread count changes the order of floating-point sums, so a run's figures depend on it as much as
on its seed. Runs are interleaved (for each seed, each thread setting). ``--results`` writes every finished run
to a JSON file, so an interrupted sweep keeps what it ran; run again with the same file, the sweep adds the
(seed, threads) runs the file does not hold yet. ``--from-results`` prints the table of such a file.
"""
from __future__ import annotations

import argparse
import csv
import os
import json
import shutil
import subprocess
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


def hit_rates(metrics_csv: str) -> List[float]:
    """The TSS hit rate of every training epoch of a run (``tss/hit_rate`` of its ``metrics.csv``)."""
    with open(metrics_csv, newline="") as f:
        return _column(list(csv.DictReader(f)), "tss/hit_rate")


def uniform_hit_rate(manifest, span: int) -> float:
    """Expected share of uniformly drawn training clips ``[t, t + span)`` that overlap their video's event
    window ``[event_start, event_end)``, averaged over the videos with a known window.

    ``manifest``: a CSV manifest path (``num_frames``, ``event_start``, ``event_end`` columns) or a sequence of
    records with those attributes (``TemporalDataModule.manifest("train").records``)."""
    if isinstance(manifest, (str, os.PathLike)):
        with open(manifest, newline="") as f:
            rows = [(int(r["num_frames"]), int(r["event_start"]), int(r["event_end"])) for r in csv.DictReader(f)
                    if r.get("event_start") not in (None, "")]
    else:
        rows = [(r.num_frames, r.event_start, r.event_end) for r in manifest if r.event_start is not None]
    if not rows:
        return float("nan")
    n = torch.tensor([max(1, frames - span + 1) for frames, _, _ in rows])
    es = torch.tensor([start for _, start, _ in rows])
    ee = torch.tensor([end for _, _, end in rows])
    # starts t in [0, N): overlap when t < ee and t + span > es, i.e. max(0, es - span + 1) <= t <= min(N, ee) - 1
    lo = (es - span + 1).clamp(min=0)
    hi = torch.minimum(n, ee)
    return float(((hi - lo).clamp(min=0).float() / n.float()).mean())


def default_threads() -> int:
    """The number of intra-op threads torch picks by itself on this machine: asked of a fresh process with
    ``OMP_NUM_THREADS`` and ``MKL_NUM_THREADS`` unset."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    out = subprocess.run([sys.executable, "-c", "import torch; print(torch.get_num_threads())"], env=env,
                         capture_output=True, text=True, check=True)
    return int(out.stdout.strip())


def run_seed(seed: int, out_dir: str, extra: List[str], threads: Optional[int] = None) -> Dict[str, object]:
    """One ``lightning-temporal fit`` of the quickstart with ``seed`` (and ``threads`` torch threads when
    given); its figures, times and manifest."""
    if threads is not None:
        torch.set_num_threads(threads)
    save_dir = os.path.join(out_dir, f"seed{seed}" + ("" if threads is None else f"_threads{threads}"))
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
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    return {"seed": seed, "threads": torch.get_num_threads(), "figures": figures, "wall_s": wall, "cpu_s": cpu,
            "hit_rate_per_epoch": hit_rates(os.path.join(log_dir, "metrics.csv")),
            "load_at_end": list(load), "log_dir": log_dir,
            "uniform_hit": uniform_hit_rate(dm.manifest("train").records, span),
            "last_map": os.path.join(log_dir, "sampling_maps", maps[-1]) if maps else None}


def _pct(x: Optional[float], hit: bool) -> str:
    if x is None:
        return "–"
    return f"{x:.2f}" if hit else f"{100 * x:.1f} %"


def _run_name(r: Dict[str, object], with_threads: bool) -> str:
    return f"seed {r['seed']}" + (f", {r['threads']} thr" if with_threads else "")


def figure_ranges(results: List[Dict[str, object]]) -> Dict[str, str]:
    """Each figure's range over all runs, as the table prints it (``"85.0 % – 91.7 %"``, ``"0.61 – 0.74"``)."""
    out = {}
    for key in results[0]["figures"]:
        hit = key.startswith("hit")
        known = [r["figures"][key] for r in results if r["figures"][key] is not None]
        out[key] = f"{_pct(min(known), hit)} – {_pct(max(known), hit)}" if known else "–"
    return out


def table(results: List[Dict[str, object]]) -> str:
    """Markdown: one row per figure, the range over all runs, each run (seed, and torch threads when the runs
    differ in them), and the goal."""
    seeds = [r["seed"] for r in results]
    with_threads = len({r.get("threads") for r in results}) > 1
    head = ("| figure | range over runs | " + " | ".join(_run_name(r, with_threads) for r in results)
            + " | goal |")
    lines = [head, "|" + "---|" * (len(seeds) + 3)]
    ranges = figure_ranges(results)
    for key in results[0]["figures"]:
        hit = key.startswith("hit")
        values = [r["figures"][key] for r in results]
        rng = ranges[key]
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


def _seeds(runs: List[Dict[str, object]]) -> str:
    seeds = sorted({r["seed"] for r in runs})
    if seeds == list(range(seeds[0], seeds[-1] + 1)) and len(seeds) > 2:
        return f"seeds {seeds[0]}–{seeds[-1]}"
    return ("seed " if len(seeds) == 1 else "seeds ") + ", ".join(str(x) for x in seeds)


def readme_table(results: List[Dict[str, object]], threads_default: Optional[int] = None) -> str:
    """The README's quickstart table: each figure's range over all runs, then over the runs of each thread
    setting (``threads_default`` is named as torch's default)."""
    settings = sorted({r["threads"] for r in results})
    groups = [[r for r in results if r["threads"] == n] for n in settings]
    names = []
    for n, runs in zip(settings, groups):
        what = f"{n} thread{'s' if n > 1 else ''}" + (" (torch's default here)" if n == threads_default else "")
        names.append(f"{what}, {_seeds(runs)}")
    head = f"| figure | all {len(results)} runs | " + " | ".join(names) + " |"
    lines = [head, "|" + "---|" * (len(names) + 2)]
    every = figure_ranges(results)
    per = []
    for runs in groups:  # one run: its value, not a range
        ranges = figure_ranges(runs)
        per.append({k: v.split(" – ")[0] if len(runs) == 1 else v for k, v in ranges.items()})
    for key in results[0]["figures"]:
        lines.append(f"| {key} | {every[key]} | " + " | ".join(p[key] for p in per) + " |")
    uniform = results[0]["uniform_hit"]
    lines.append(f"| uniform sampling's expected hit rate | {uniform:.2f} | " + " | ".join("" for _ in per) + " |")
    return "\n".join(lines)


def read_results(path: str) -> Dict[str, object]:
    """A ``--results`` JSON file: ``{"settings": {...}, "runs": [run, ...]}``."""
    with open(path) as f:
        return json.load(f)


def _write_results(path: str, settings: Dict[str, object], results: List[Dict[str, object]]) -> None:
    runs = [{k: v for k, v in r.items() if k not in ("log_dir", "last_map")} for r in results]
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump({"settings": settings, "runs": runs}, f, indent=1, ensure_ascii=False)
        f.write("\n")


def _header(settings: Dict[str, object], results: List[Dict[str, object]]) -> str:
    loads = [r["load_at_end"][0] for r in results if r.get("load_at_end")]
    load = f"load average (1 min) at the end of each run {min(loads):.1f}–{max(loads):.1f}" if loads else ""
    return (f"quickstart{' (small)' if settings.get('small') else ''}, {len(results)} run(s): seeds "
            f"{sorted({r['seed'] for r in results})}, torch threads {sorted({r['threads'] for r in results})} "
            f"({settings.get('threads_default', '?')} = torch's default here), {settings.get('cpus', '?')} CPUs, "
            f"{load}")


def main(argv: Optional[List[str]] = None) -> List[Dict[str, object]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3, help="number of seeds (0, 1, ...)")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--small", action="store_true", help="tiny data and 10 epochs: a smoke test")
    parser.add_argument("--threads", nargs="+", default=["1"],
                        help="torch thread settings, each a number or 'default' (torch's own choice here); "
                             "every seed runs with each")
    parser.add_argument("--out", default="outputs/quickstart_seeds", help="folder of the runs")
    parser.add_argument("--results", default=None, help="JSON file that every finished run is written to")
    parser.add_argument("--from-results", default=None, help="print the table of a --results file and exit")
    parser.add_argument("--save-figure", action="store_true",
                        help="copy the first seed's last sampling map to benchmarks/results/ (the README figure)")
    args = parser.parse_args(argv)
    if args.from_results:
        data = read_results(args.from_results)
        print(_header(data["settings"], data["runs"]) + "\n")
        print(table(data["runs"]))
        print("\nThe README's table:\n")
        print(readme_table(data["runs"], data["settings"].get("threads_default")))
        return data["runs"]
    extra = SMALL if args.small else []
    n_default = default_threads()
    threads = [n_default if t == "default" else int(t) for t in args.threads]
    settings = {"small": args.small, "threads": args.threads, "threads_default": n_default,
                "cpus": os.cpu_count(), "torch": torch.__version__}
    results = []
    if args.results and os.path.isfile(args.results):  # a sweep continued: keep the runs the file holds
        previous = read_results(args.results)
        if bool(previous["settings"].get("small")) != args.small:
            raise SystemExit(f"{args.results} holds runs with small={previous['settings'].get('small')}; "
                             "give another --results file")
        results = previous["runs"]
        settings["threads"] = sorted(set(previous["settings"]["threads"]) | set(args.threads))
    done = {(r["seed"], r["threads"]) for r in results}
    for s in range(args.first_seed, args.first_seed + args.seeds):
        for n in threads:
            if (s, n) in done:
                print(f"seed {s}, {n} thread(s): in {args.results} already")
                continue
            results.append(run_seed(s, args.out, extra, threads=n))
            if args.results:
                _write_results(args.results, settings, results)
    print("\n" + _header(settings, results) + "\n")
    print(table(results))
    if args.save_figure and results[0]["last_map"]:
        dest = os.path.join(ROOT, "benchmarks", "results", "quickstart_sampling_map_epoch029.png")
        shutil.copyfile(results[0]["last_map"], dest)
        print(f"\nsampling map of seed {results[0]['seed']}: {dest}")
    return results


if __name__ == "__main__":
    main()
