"""Mutation pass: plant known bugs in the package one at a time and check that the tests catch each one.

    python benchmarks/mutation_pass.py                       # every mutation of MUTATIONS below
    python benchmarks/mutation_pass.py --only P1 T1 H1       # a few, by id
    python benchmarks/mutation_pass.py --file lightning_temporal/pooling.py
    python benchmarks/mutation_pass.py --mutations more.json # others from a JSON list (same fields as below)
    python benchmarks/mutation_pass.py --list                # print the list and stop

A mutation is a plain source-text replacement: ``file`` (relative to the repository root), ``old`` (text that
must occur exactly once in the file), ``new``, the pytest arguments that should catch it (``tests``: test files,
``file::test`` ids, ``-k`` expressions) and ``what`` it breaks. For each one the script writes the mutated file,
runs ``python -B -m pytest -q -x -p no:cacheprovider <tests>`` in a fresh process with a time limit, and puts
the original text back (in a ``finally``, also on Ctrl-C or SIGTERM; the file is compared with its original
afterwards). The tests import the package of this checkout (its root first on ``PYTHONPATH``). Run it in a
copy of the repository that nothing else uses while it runs: any other process that imports the package from
the same folder meanwhile may import a mutated module. Outcomes:

* ``killed``: the tests failed (exit status 1), or errored, or ran past the limit;
* ``SURVIVED``: the tests passed on the mutated code. Add a test that fails on it, or say why the mutant is
  equivalent (no input can tell it apart) in ``equivalent`` of its entry;
* ``not applicable``: ``old`` is not in the file exactly once (the code moved): update the entry.

Before the mutations, every distinct test selection runs once on the unmutated code (``--no-baseline`` skips
it): a selection that fails there would "kill" every mutant, so its mutations are reported ``baseline failed``
instead. The table at the end gives, per mutation, the outcome, the seconds of the test run (wall time; these
numbers are only a guide) and what broke first. Not run by CI: one full pass takes tens of minutes on 2 cores.

To extend: add an entry to ``MUTATIONS`` (ids by module: P pooling, T transforms, M metrics, S score table,
G segment kernels, V validation pooling, H hit rate), or pass ``--mutations FILE.json`` with a list of objects
having the same keys.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from typing import Dict, List, Optional

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))

POOLING = ["tests/test_pooling.py", "tests/test_validation_pooling.py", "lightning_temporal/pooling.py"]
TRANSFORMS = ["tests/test_transforms.py", "tests/test_center_crop.py", "tests/test_train_transform_draws.py",
              "lightning_temporal/data/transforms.py"]
METRICS = ["tests/test_metrics.py", "tests/test_metrics_keys.py", "lightning_temporal/metrics.py"]
TABLE = ["tests/test_score_table.py", "tests/test_policies.py", "lightning_temporal/sampling/table.py"]
SEGMENTS = ["tests/test_score_table.py", "tests/test_policies.py", "tests/test_segments_gamma.py",
            "lightning_temporal/sampling/segments.py"]
EVAL = ["tests/test_validation_pooling.py", "tests/test_evaluation.py", "tests/test_evaluation_math.py"]
HIT = ["tests/test_hit_rate_skipped.py", "tests/test_callback.py", "-k",
       "hit_rate or skipped or history_metrics or keep_history or prior_mode"]
SGS = "lightning_temporal/models/sgs.py"
SGS_TESTS = ["tests/test_sgs_ordered_fixed.py", "tests/test_sgs.py"]
GROUPING = ["tests/test_sgs_grouping.py"]
MANIFEST = ["tests/test_manifest.py", "tests/test_manifest_layouts.py", "tests/test_recipes.py", "-k", "kinetics"]
CALLBACK = "lightning_temporal/callbacks/tss_manifest.py"  # the hit rate lives beside the event windows

MUTATIONS: List[Dict[str, object]] = [
    # ---------------------------------------------------------------- pooling.py: softmax temporal pooling
    dict(id="P1", file="lightning_temporal/pooling.py", tests=POOLING, what="mean pooling ignores the mask",
         old="    if valid is None:\n        return s.mean(dim, keepdim=keepdim)",
         new="    if True:\n        return s.mean(dim, keepdim=keepdim)"),
    dict(id="P2", file="lightning_temporal/pooling.py", tests=POOLING, what="max pooling ignores the mask",
         old="    if valid is not None:\n        s = torch.where(valid, s,",
         new="    if False:\n        s = torch.where(valid, s,"),
    dict(id="P3", file="lightning_temporal/pooling.py", tests=POOLING, what="softmax pooling averages instead of sums",
         old="pooled = ref + (p * d).sum(dim, keepdim=True)", new="pooled = ref + (p * d).mean(dim, keepdim=True)"),
    dict(id="P4", file="lightning_temporal/pooling.py", tests=POOLING, what="gamma sign flipped (min pooling)",
         old="z = torch.where(usable, gamma * d,", new="z = torch.where(usable, -gamma * d,"),
    dict(id="P5", file="lightning_temporal/pooling.py", tests=POOLING, what="padding gets weight exp(0)",
         old="z = torch.where(usable, gamma * d, torch.full((), -math.inf,",
         new="z = torch.where(usable, gamma * d, torch.full((), 0.0,"),
    dict(id="P6", file="lightning_temporal/pooling.py", tests=POOLING, what="tensor gamma: mean at gamma 1, not 0",
         old="        g == 0,\n", new="        g == 1,\n"),
    dict(id="P7", file="lightning_temporal/pooling.py", tests=POOLING, what="lengths_to_mask one position too many",
         old="< lengths.unsqueeze(-1)", new="<= lengths.unsqueeze(-1)"),
    dict(id="P8", file="lightning_temporal/pooling.py", tests=POOLING, what="masked mean divides by T",
         old="return total / valid.sum(dim, keepdim=keepdim).to(s.dtype)", new="return total / s.shape[dim]"),
    dict(id="P9", file="lightning_temporal/pooling.py", tests=POOLING, what="an all-masked video is not an error",
         old="    empty = ~mask.any(-1)\n    if bool(empty.any()):", new="    empty = ~mask.any(-1)\n    if False:"),
    # -------------------------------------------------------------------- data/transforms.py
    dict(id="T1", file="lightning_temporal/data/transforms.py", tests=TRANSFORMS, what="centre crop floors",
         old="return int(round((height - size) / 2.0)), int(round((width - size) / 2.0))",
         new="return (height - size) // 2, (width - size) // 2"),
    dict(id="T2", file="lightning_temporal/data/transforms.py", tests=TRANSFORMS,
         what="random crop never reaches the last position",
         old="top = int(torch.randint(height - size + 1,", new="top = int(torch.randint(height - size,"),
    dict(id="T3", file="lightning_temporal/data/transforms.py", tests=TRANSFORMS,
         what="short-side resize rounds the long side instead of truncating",
         old="return short_side, int(short_side * width / height)",
         new="return short_side, int(round(short_side * width / height))"),
    dict(id="T4", file="lightning_temporal/data/transforms.py", tests=TRANSFORMS, what="hflip flips rows",
         old="return frames.flip(-1)", new="return frames.flip(-2)"),
    dict(id="T5", file="lightning_temporal/data/transforms.py", tests=TRANSFORMS, what="normalize multiplies by std",
         old="return (frames - mean.view(shape)) / std.view(shape)",
         new="return (frames - mean.view(shape)) * std.view(shape)"),
    dict(id="T6", file="lightning_temporal/data/transforms.py", tests=TRANSFORMS,
         what="fused normalisation forgets to divide the mean by std",
         old="self._shift = (mean_t / std_t).view(3, 1, 1, 1)", new="self._shift = mean_t.view(3, 1, 1, 1)"),
    dict(id="T7", file="lightning_temporal/data/transforms.py", tests=TRANSFORMS, what="flip probability 0.9",
         old="bool(torch.rand((), generator=generator) < 0.5)", new="bool(torch.rand((), generator=generator) < 0.9)"),
    dict(id="T8", file="lightning_temporal/data/transforms.py", tests=TRANSFORMS, what="resize without antialias",
         old="antialias: bool = True", new="antialias: bool = False"),
    # ----------------------------------------------------------------------------- metrics.py
    dict(id="M1", file="lightning_temporal/metrics.py", tests=METRICS, what="EER interpolates from the wrong end",
         old="lam = -d[i] / (d[j] - d[i])", new="lam = d[j] / (d[j] - d[i])"),
    dict(id="M2", file="lightning_temporal/metrics.py", tests=METRICS,
         what="mean class accuracy counts absent classes as 0",
         old="return (self.correct[present].double() / self.support[present]).mean().float()",
         new="return (self.correct.double() / self.support.clamp(min=1)).mean().float()"),
    dict(id="M3", file="lightning_temporal/metrics.py", tests=METRICS, what="binary score sign flipped",
         old="return preds[:, 1] - preds[:, 0]", new="return preds[:, 0] - preds[:, 1]"),
    dict(id="M4", file="lightning_temporal/metrics.py", tests=METRICS, what="EER splits runs of tied scores",
         old="    last = torch.cat([(s[1:] != s[:-1]).nonzero().squeeze(1), torch.tensor([n - 1], device=s.device)])",
         new="    last = torch.arange(n, device=s.device)"),
    dict(id="M5", file="lightning_temporal/metrics.py", tests=METRICS, what="top5 only from 7 classes",
         old="    if num_classes > 5:\n", new="    if num_classes > 6:\n"),
    # ------------------------------------------------------------------ sampling/table.py (Eq. S.2)
    dict(id="S1", file="lightning_temporal/sampling/table.py", tests=TABLE, what="Eq. S.2 weight (F-|i|)/(F+1)",
         old="weight = (F - rel.abs()).to(torch.float32) / F", new="weight = (F - rel.abs()).to(torch.float32) / (F + 1)"),
    dict(id="S2", file="lightning_temporal/sampling/table.py", tests=TABLE, what="Eq. S.2 window one short on the right",
         old="rel = torch.arange(-(F - 1), F, dtype=torch.int64)", new="rel = torch.arange(-(F - 1), F - 1, dtype=torch.int64)"),
    dict(id="S3", file="lightning_temporal/sampling/table.py", tests=TABLE,
         what="interior test off by one (edge windows spill into the neighbour video)",
         old="inside = (t_r >= F - 1) & (t_r + F <= self.lengths[v_r])",
         new="inside = (t_r >= F - 2) & (t_r + F <= self.lengths[v_r])"),
    dict(id="S4", file="lightning_temporal/sampling/table.py", tests=TABLE, what="fill window one short on the right",
         old="hi = torch.minimum(t_r + r_r, self.lengths[v_r] - 1)", new="hi = torch.minimum(t_r + r_r - 1, self.lengths[v_r] - 1)"),
    dict(id="S5", file="lightning_temporal/sampling/table.py", tests=TABLE,
         what="fill interior test off by one (writes past the video's end)",
         old="inside = (r_r == rmax) & (t_r >= rmax) & (t_r + rmax < self.lengths[v_r])",
         new="inside = (r_r == rmax) & (t_r >= rmax) & (t_r + rmax <= self.lengths[v_r])"),
    dict(id="S6", file="lightning_temporal/sampling/table.py", tests=TABLE, what="probabilities ignore gamma",
         old="torch.softmax(self[v].to(torch.float64) * gamma, 0)", new="torch.softmax(self[v].to(torch.float64), 0)"),
    # ------------------------------------------------------------ sampling/segments.py (kernels)
    dict(id="G1", file="lightning_temporal/sampling/segments.py", tests=SEGMENTS,
         what="uniform draw never picks the last position",
         old="return torch.minimum((u * lengths_all).to(torch.int64), lengths_all - 1)",
         new="return torch.minimum((u * (lengths_all - 1)).to(torch.int64), lengths_all - 1)"),
    dict(id="G2", file="lightning_temporal/sampling/segments.py", tests=SEGMENTS, what="entropy sign of the second term",
         old="out[v0:v1] = (torch.log(z) - ex / z).to(torch.float32)", new="out[v0:v1] = (torch.log(z) + ex / z).to(torch.float32)"),
    dict(id="G3", file="lightning_temporal/sampling/segments.py", tests=SEGMENTS, what="gamma < 1 ignored",
         old="    if gamma != 1.0:\n        x.mul_(gamma)", new="    if gamma > 1.0:\n        x.mul_(gamma)"),
    dict(id="G4", file="lightning_temporal/sampling/segments.py", tests=SEGMENTS, what="segment ids shifted",
         old="ids[starts[1:]] = 1", new="ids[starts[:-1]] = 1"),
    dict(id="G5", file="lightning_temporal/sampling/segments.py", tests=SEGMENTS,
         what="softmax sample without the final clamp into the segment",
         old="j = torch.minimum(torch.maximum(j, s_loc), e_loc - 1)", new="j = torch.maximum(j, s_loc)",
         equivalent="reached only when u * mass rounds onto the segment's last prefix (u within float rounding of 1); "
                    "no test draws such a u"),
    dict(id="G6", file="lightning_temporal/sampling/segments.py", tests=SEGMENTS, what="block search left instead of right",
         old="blk = torch.searchsorted(incl, target, right=True)", new="blk = torch.searchsorted(incl, target, right=False)",
         equivalent="differs only when a target equals a block prefix exactly (probability ~0 for a float64 uniform), "
                    "and the in-block search then picks the same position"),
    dict(id="G7", file="lightning_temporal/sampling/segments.py", tests=SEGMENTS, what="segment max not subtracted (2-D path)",
         old="torch.sub(w2, top, out=x.view(lengths.numel(), -1))",
         new="torch.sub(w2, 0.0, out=x.view(lengths.numel(), -1))"),
    # ------------------------------------------------------------ module.py: validation pooling
    dict(id="V1", file="lightning_temporal/evaluation.py", tests=EVAL, what="validation pooling without the padding mask",
         old="return softmax_temporal_pool(scores.float(), g, mask=mask)",
         new="return softmax_temporal_pool(scores.float(), g)"),
    dict(id="V2", file="lightning_temporal/module.py", tests=EVAL, what="val/loss from the last gamma, not gamma_p",
         old="F.cross_entropy(pooled[0], labels)", new="F.cross_entropy(pooled[-1], labels)"),
    dict(id="V3", file="lightning_temporal/module.py", tests=EVAL, what="metrics of one gamma get another's logits",
         old="for g, video_logits in zip(self.gammas, pooled):", new="for g, video_logits in zip(self.gammas, pooled.flip(0)):"),
    dict(id="V4", file="lightning_temporal/evaluation.py", tests=EVAL, what="padding filled with ones instead of zeros",
         old="padded = scores.new_zeros(num_videos, longest, scores.shape[-1])",
         new="padded = scores.new_ones(num_videos, longest, scores.shape[-1])",
         equivalent="padding never enters the pooling (masked), so its value cannot change any output"),
    # V5 keeps every clip in its own video's row, rotated: validation pooling cannot see it (the pooling does not
    # depend on the order of a video's clips), predict's relevance curve can
    dict(id="V5", file="lightning_temporal/evaluation.py", tests=EVAL + ["tests/test_prediction_writer.py"],
         what="clip positions rotated within each video's row",
         old="first = torch.cumsum(counts, 0) - counts", new="first = torch.cumsum(counts, 0) - counts.flip(0)"),
    # ------------------------------------------------------------ callbacks: TSS hit rate
    dict(id="H1", file=CALLBACK, tests=HIT, what="a skipped video (start -1) counts as a miss",
         old="valid = (t >= 0) & (es >= 0) & (ee >= 0)", new="valid = (es >= 0) & (ee >= 0)"),
    dict(id="H2", file=CALLBACK, tests=HIT, what="a clip starting at the event's end counts as a hit",
         old="hit = (t < ee) & (t + self.span > es)", new="hit = (t <= ee) & (t + self.span > es)"),
    dict(id="H3", file=CALLBACK, tests=HIT, what="a clip ending just before the event counts as a hit",
         old="hit = (t < ee) & (t + self.span > es)", new="hit = (t < ee) & (t + self.span >= es)"),
    dict(id="H4", file=CALLBACK, tests=HIT, what="videos without an event window count as misses",
         old="valid = (t >= 0) & (es >= 0) & (ee >= 0)", new="valid = (t >= 0)"),
    dict(id="H5", file=CALLBACK, tests=HIT, what="hit rate over all videos, trained or not",
         old="return float((hit & valid).sum()) / float(valid.sum())",
         new="return float((hit & valid).sum()) / float(t.numel())"),
    # ---------------------------------------------------------------- SGS: fixed pooling, ordered bins, grouping by B'
    dict(id="B1", file=SGS, tests=SGS_TESTS, what="ordered ignores min_change (scale-free: B bins whenever a clip changes)",
         old="b_eff = (1.0 + torch.floor(total / min_change)).clamp(max=num_bins)",
         new="b_eff = torch.full_like(total, float(num_bins))"),
    dict(id="B2", file=SGS, tests=SGS_TESTS, what="fixed pooling window ends floored instead of ceiled",
         old="end = -((-(idx + 1) * num_frames) // b)", new="end = ((idx + 1) * num_frames) // b"),
    dict(id="B3", file=SGS, tests=SGS_TESTS, what="ordered weights pass no gradient to the embedding",
         old="frac = u - low  # in [0, 1]", new="frac = (u - low).detach()  # in [0, 1]"),
    dict(id="B4", file="lightning_temporal/models/backbone.py", tests=GROUPING,
         what="grouped clips not put back in batch order",
         old="return feat.index_select(0, back), out_mask.index_select(0, back)", new="return feat, out_mask"),
    dict(id="Q1", file="lightning_temporal/pooling.py", tests=POOLING, what="a gamma that overflows float32 accepted",
         old="if math.isfinite(gamma) and gamma > top:", new="if False:"),
    dict(id="K1", file="lightning_temporal/data/manifest.py", tests=MANIFEST,
         what="Kinetics split column ignored (every split reads every row)",
         old='            if d["split"].lower() not in wanted:\n                continue',
         new='            if False:\n                continue'),
]

class _Interrupted(Exception):
    pass


def _on_term(signum, frame):  # SIGTERM: unwind through the finally that restores the file
    raise _Interrupted(f"signal {signum}")


def run_tests(tests: List[str], timeout: float) -> Dict[str, object]:
    """One pytest run in a fresh interpreter (no bytecode written, so a mutated module is never cached)."""
    cmd = [sys.executable, "-B", "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests]
    # this checkout's package first (the one the mutations are planted in)
    path = os.pathsep.join([ROOT] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", PYTHONPATH=path)
    start = time.perf_counter()
    try:
        out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
        rc, text = out.returncode, out.stdout + out.stderr
    except subprocess.TimeoutExpired as err:
        rc, text = None, (err.stdout or b"").decode(errors="replace") if isinstance(err.stdout, bytes) else ""
    seconds = time.perf_counter() - start
    first = next((ln.strip() for ln in text.splitlines() if ln.startswith(("FAILED", "ERROR"))), "")
    if rc is None:
        first = f"timed out after {timeout:.0f} s"
    return {"rc": rc, "seconds": seconds, "first": first[:160]}


def apply_and_test(m: Dict[str, object], timeout: float) -> Dict[str, object]:
    """Plant mutation ``m``, run its tests, restore the file; the outcome."""
    path = os.path.join(ROOT, str(m["file"]))
    if not os.path.isfile(path):
        return {"outcome": "not applicable", "seconds": 0.0, "first": f"{m['file']} does not exist"}
    with open(path, encoding="utf-8") as f:
        original = f.read()
    count = original.count(str(m["old"]))
    if count != 1:
        return {"outcome": "not applicable", "seconds": 0.0, "first": f"'old' occurs {count} times in {m['file']}"}
    try:
        with open(path, "w", encoding="utf-8") as f:
            f.write(original.replace(str(m["old"]), str(m["new"])))
        res = run_tests(list(m["tests"]), timeout)
    finally:
        with open(path, "w", encoding="utf-8") as f:
            f.write(original)
    with open(path, encoding="utf-8") as f:
        if f.read() != original:
            raise RuntimeError(f"{m['file']} was not restored; restore it from git")
    res["outcome"] = "SURVIVED" if res["rc"] == 0 else "killed"
    return res


def main(argv: Optional[List[str]] = None) -> List[Dict[str, object]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", default=None, help="mutation ids to run")
    parser.add_argument("--file", default=None, help="only the mutations of this file")
    parser.add_argument("--mutations", default=None, help="a JSON list of further mutations (same keys)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per test run")
    parser.add_argument("--no-baseline", action="store_true", help="skip the runs on the unmutated code")
    parser.add_argument("--list", action="store_true", help="print the mutations and stop")
    parser.add_argument("--json", default=None, help="write the outcomes to this JSON file")
    args = parser.parse_args(argv)
    mutations = list(MUTATIONS)
    if args.mutations:
        with open(args.mutations) as f:
            mutations += json.load(f)
    if args.only:
        mutations = [m for m in mutations if m["id"] in args.only]
    if args.file:
        mutations = [m for m in mutations if os.path.normpath(str(m["file"])) == os.path.normpath(args.file)]
    ids = [m["id"] for m in mutations]
    if len(set(ids)) != len(ids):
        raise SystemExit(f"duplicate mutation ids: {sorted({i for i in ids if ids.count(i) > 1})}")
    if args.list:
        for m in mutations:
            print(f"{m['id']:4} {m['file']}: {m['what']}  [{' '.join(m['tests'])}]")
        return []
    signal.signal(signal.SIGTERM, _on_term)
    broken = set()
    if not args.no_baseline:
        for tests in {tuple(m["tests"]) for m in mutations}:
            res = run_tests(list(tests), args.timeout)
            print(f"baseline {' '.join(tests)}: {'passes' if res['rc'] == 0 else 'FAILS ' + res['first']} "
                  f"({res['seconds']:.0f} s)", flush=True)
            if res["rc"] != 0:
                broken.add(tests)
    results = []
    for m in mutations:
        if tuple(m["tests"]) in broken:
            res = {"outcome": "baseline failed", "seconds": 0.0, "first": "its tests fail on the unmutated code"}
        else:
            res = apply_and_test(m, args.timeout)
        res.update(id=m["id"], file=m["file"], what=m["what"], equivalent=m.get("equivalent", ""))
        results.append(res)
        print(f"{m['id']:4} {res['outcome']:15} {res['seconds']:6.1f} s  {m['what']}", flush=True)
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    killed = sum(r["outcome"] == "killed" for r in results)
    survived = [r for r in results if r["outcome"] == "SURVIVED"]
    print(f"\nmutation pass: {len(results)} mutations, {killed} killed, {len(survived)} survived, "
          f"{sum(r['outcome'] == 'not applicable' for r in results)} not applicable; load average "
          f"{load[0]:.1f} {load[1]:.1f} {load[2]:.1f}\n")
    print("| id | file | mutation | outcome | test run, s (wall) | first failure, or why equivalent |")
    print("|---|---|---|---|---|---|")
    for r in results:
        why = r["equivalent"] if r["outcome"] == "SURVIVED" and r["equivalent"] else r["first"]
        print(f"| {r['id']} | `{r['file']}` | {r['what']} | {r['outcome']} | {r['seconds']:.0f} | "
              f"{why.replace('|', '/')} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return results


if __name__ == "__main__":
    main()
