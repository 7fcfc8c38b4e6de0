"""Programmatic experiments on the embedded synthetic data: one call = one trained and tested model.

``run_experiment(config, policy=None, callback=None) -> dict`` builds the :class:`TemporalDataModule`, the
:class:`VideoClassifier`, a :class:`StochasticSoftmaxCallback` with the requested policy (``config["method"]``, a
policy name, or ``policy=``: a ``SamplingPolicy`` class, its import path, a ``class_path`` mapping; or a ready
``callback=``) and a CPU ``Trainer``; it trains (optionally under
early stopping on ``val/top1``), tests the checkpoint kept by early stopping (or the last weights) at every
requested pooling temperature γ_p, and returns one plain dict (JSON-serialisable) with the test accuracies,
the sampler's hit rate per epoch, the number of epochs and the average GMACs per test clip.
``benchmarks/reproduce.py`` and ``tests/test_reproduce.py`` share it. It is a harness of the benchmarks, not
part of the installed package, and uses the package's public API only.

Example::

    >>> from runner import run_experiment                                       # doctest: +SKIP
    >>> row = run_experiment({"method": "tss", "gamma_s": 1.0, "max_epochs": 20,
    ...                       "data": {"root": "data_cache/repro_multiclass"}})  # doctest: +SKIP
    >>> row["test"]["gp1"]["top1"], row["hit_rate"]                          # doctest: +SKIP
"""
from __future__ import annotations

import copy
import os
import tempfile
import time
import warnings
from typing import Any, Dict, List, Optional

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

from lightning_temporal import StochasticSoftmaxCallback, TemporalDataModule, VideoClassifier, count_gmacs
from lightning_temporal.sampling import POLICIES
from lightning_temporal.data.video_dataset import gather_clips
from lightning_temporal.metrics import classification_metrics
from lightning_temporal.models import SimilarityGuidedSampling
from lightning_temporal.module import pooling_key

__all__ = ["DEFAULTS", "METHODS", "run_experiment", "pooling_key"]

METHODS = tuple(POLICIES)  # the registered policy names ("uniform", "tss", "prior", "reinforce", "bootstrap", ...)

#: every key run_experiment reads, with its default (the reproduction settings, tuned for 2 CPU cores)
DEFAULTS: Dict[str, Any] = {
    "method": "tss",                 # a registered policy name (METHODS); or run_experiment(policy=...)
    "policy_args": {},               # constructor arguments of the policy (StochasticSoftmaxCallback policy_args)
    "gamma_s": 1.0,                  # sampling temperature (tss, prior)
    "warmup_epochs": 3,
    "exploration_epochs": 5,
    "scoring": "clean",              # clean | augmented
    "reinforce_lr": 1.0,
    "data": {"root": "data_cache/repro_multiclass"},  # ensure_dataset arguments (root + generator params)
    "clip_len": 16,
    "crop_size": 28,
    "short_side": 32,
    "flip": False,                   # a horizontal flip swaps the synthetic classes left/right: keep it off
    "batch_size": 16,
    "eval_batch_size": 8,
    "eval_clip_stride": None,        # None = clip_len // 2
    "num_workers": 0,
    "backbone": "simple3d",
    "backbone_kwargs": {},
    "sgs": None,
    "lr": 1e-3,
    "weight_decay": 0.0,
    "max_epochs": 30,
    "early_stopping": False,         # stop on val/top1 (checked every val_every epochs)
    "patience": 2,                   # in validation checks
    "min_epochs": 0,
    "val_every": 5,
    "gamma_p": 1.0,                  # pooling temperature of val/top1 (what early stopping watches)
    "test_gamma_p": [0.0, 1.0, 1e6],
    "test_num_bins": None,           # list of SGS B values to test the trained model with (Table A.4)
    "gmacs_clips": 32,               # test clips that count_gmacs averages over (0 = skip)
    "seed": 0,
    "threads": 2,
    "track_videos": 4,
    "out_dir": None,                 # logs / checkpoints; None = a temporary folder
    "progress": False,
}


def _merge(config: Dict[str, Any]) -> Dict[str, Any]:
    unknown = set(config) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"run_experiment: unknown config key(s) {sorted(unknown)}; allowed: {sorted(DEFAULTS)}")
    cfg = copy.deepcopy(DEFAULTS)
    cfg.update(copy.deepcopy(config))
    if cfg["method"] not in METHODS:
        raise ValueError(f"run_experiment: method={cfg['method']!r}; one of {METHODS} is allowed (or give "
                         "run_experiment a policy= or callback=)")
    if cfg["eval_clip_stride"] is None:
        cfg["eval_clip_stride"] = max(1, cfg["clip_len"] // 2)
    if "root" not in cfg["data"]:
        raise ValueError("run_experiment: config['data'] needs 'root' (the dataset folder)")
    return cfg


def _test_metrics(trainer, model: VideoClassifier, dm, gammas: List[float]) -> Dict[str, Dict[str, float]]:
    """``{pooling_key(g): {"top1", "mean_class_acc", ...}}`` of one test run, for each pooling temperature g of
    ``gammas`` (the model reports them all: it was built with them in ``report_gamma_p``)."""
    out = trainer.test(model, datamodule=dm, verbose=False)[0]
    names = list(classification_metrics(model.num_classes).keys())
    return {pooling_key(g): {n: float(out[model.metric_prefix("test", g) + n]) for n in names} for g in gammas}


def _gmacs(model, dm, n: int) -> Optional[float]:
    """Average GMACs per clip over the clips of the first test videos (what SGS actually ran)."""
    if n <= 0:
        return None
    ds = dm.datasets["test"]
    clips = []
    for i in range(len(ds)):
        item = ds[i]
        if not isinstance(item, dict) or "starts" not in item:  # a skipped video, or dense mode: no clips
            break
        video, starts = item["video"][None], item["starts"]  # the clips as the module reads them
        clips.append(gather_clips(video, torch.zeros_like(starts), starts, item["clip_len"], item["stride"]))
        if sum(x.shape[0] for x in clips) >= n:
            break
    if not clips:
        return None
    return count_gmacs(model.backbone, torch.cat(clips)[:n])


class _LearningCurves(L.Callback):
    """Records per-epoch ``train/loss_epoch`` and ``train/top1``, and ``val/top1`` when validated."""

    def __init__(self) -> None:
        self.train: List[Dict[str, float]] = []
        self.val: List[Dict[str, float]] = []

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        m = trainer.callback_metrics
        self.train.append({"epoch": trainer.current_epoch,
                           **{k: float(m[k]) for k in ("train/loss_epoch", "train/top1") if k in m}})

    def on_validation_end(self, trainer, pl_module) -> None:  # after the module logged val/top1
        if not trainer.sanity_checking and "val/top1" in trainer.callback_metrics:
            self.val.append({"epoch": trainer.current_epoch, "val/top1": float(trainer.callback_metrics["val/top1"])})


def _sampler_callback(cfg: Dict[str, Any], policy: Any) -> StochasticSoftmaxCallback:
    mode = cfg["method"]
    common = dict(warmup_epochs=cfg["warmup_epochs"], exploration_epochs=cfg["exploration_epochs"],
                  scoring=cfg["scoring"], track_videos=cfg["track_videos"], seed=cfg["seed"],
                  policy_args=dict(cfg["policy_args"]) or None)
    if policy is not None:
        return StochasticSoftmaxCallback(gamma_s=cfg["gamma_s"], policy=policy, **common)
    return StochasticSoftmaxCallback(
        gamma_s=cfg["gamma_s"] if mode in ("tss", "prior", "bootstrap") else 0.0, mode=mode,
        reinforce_lr=cfg["reinforce_lr"], **common)


def _build(cfg: Dict[str, Any], out_dir: str, policy: Any = None,
           callback: Optional[StochasticSoftmaxCallback] = None):
    """The data module, model, sampler callback, learning-curve recorder, checkpoint callback and trainer."""
    sampler_cb = callback if callback is not None else _sampler_callback(cfg, policy)
    dm = TemporalDataModule(
        synthetic=dict(cfg["data"]), clip_len=cfg["clip_len"], crop_size=cfg["crop_size"],
        short_side=cfg["short_side"], flip=cfg["flip"], mean=[0.5] * 3, std=[0.25] * 3, batch_size=cfg["batch_size"],
        eval_batch_size=cfg["eval_batch_size"], eval_clip_stride=cfg["eval_clip_stride"],
        num_workers=cfg["num_workers"], seed=cfg["seed"], progress=cfg["progress"],
        clean_clips=sampler_cb.policy_class.learns and sampler_cb.scoring == "clean")
    lr, wd = float(cfg["lr"]), float(cfg["weight_decay"])
    model = VideoClassifier(
        cfg["backbone"], num_classes=dm.num_classes, backbone_kwargs=cfg["backbone_kwargs"] or None,
        sgs=cfg["sgs"], gamma_p=cfg["gamma_p"], report_gamma_p=cfg["test_gamma_p"],
        optimizer=lambda p: torch.optim.Adam(p, lr=lr, weight_decay=wd))
    curves = _LearningCurves()
    callbacks = [sampler_cb, curves]
    ckpt = None
    if cfg["early_stopping"]:
        ckpt = ModelCheckpoint(dirpath=os.path.join(out_dir, "ckpt"), monitor="val/top1", mode="max",
                               save_top_k=1, save_weights_only=True)
        callbacks += [ckpt, EarlyStopping(monitor="val/top1", mode="max", patience=cfg["patience"])]
    trainer = L.Trainer(
        accelerator="cpu", devices=1, max_epochs=cfg["max_epochs"], min_epochs=cfg["min_epochs"],
        check_val_every_n_epoch=cfg["val_every"] if cfg["early_stopping"] else cfg["max_epochs"] + 1,
        limit_val_batches=1.0 if cfg["early_stopping"] else 0, num_sanity_val_steps=0,
        logger=False, enable_checkpointing=ckpt is not None, callbacks=callbacks,
        enable_progress_bar=cfg["progress"], enable_model_summary=False, default_root_dir=out_dir,
        deterministic=False)
    return dm, model, sampler_cb, curves, ckpt, trainer


def _test(cfg: Dict[str, Any], trainer, model: VideoClassifier, dm) -> Dict[str, Any]:
    """Test results at every pooling temperature; with ``test_num_bins``, also with each number of SGS bins set
    on the trained model at inference only (seed Table A.4), and the GMACs of each."""
    dm.setup("test")
    gammas = cfg["test_gamma_p"]
    result: Dict[str, Any] = {"test": _test_metrics(trainer, model, dm, gammas),
                              "gmacs": _gmacs(model, dm, int(cfg["gmacs_clips"]))}
    if cfg["test_num_bins"]:
        sgs = next((m for m in model.modules() if isinstance(m, SimilarityGuidedSampling)), None)
        if sgs is None:
            raise ValueError("run_experiment: test_num_bins needs a backbone with SGS (config['sgs'])")
        trained_bins = sgs.num_bins
        result["test_by_bins"], result["gmacs_by_bins"] = {}, {}
        for b in cfg["test_num_bins"]:
            sgs.num_bins = int(b)  # one line on a trained model
            result["test_by_bins"][str(b)] = _test_metrics(trainer, model, dm, gammas)
            result["gmacs_by_bins"][str(b)] = _gmacs(model, dm, int(cfg["gmacs_clips"]))
        sgs.num_bins = trained_bins
    return result


def _sampler_summary(cfg: Dict[str, Any], sampler_cb: StochasticSoftmaxCallback) -> Dict[str, Any]:
    """The sampler's hit rate and phase per epoch, the starts of every video per epoch, and the mean hit rate
    over the epochs >= W + E (TSS's exploitation epochs; the same epochs for every method)."""
    m = sampler_cb.metrics
    first = cfg["warmup_epochs"] + cfg["exploration_epochs"]
    h = sampler_cb.history  # starts [E, V] of every video (keep_history="all"), -1 = not trained
    late = [x["hit_rate"] for x in m if x["epoch"] >= first and x.get("hit_rate") is not None]
    return {"hit_rate_per_epoch": [x.get("hit_rate") for x in m], "phase_per_epoch": [x["phase"] for x in m],
            "scored_per_epoch": [x["records"] for x in m],  # clean-scored clips applied (forward passes, no grad)
            "clean_top1_per_epoch": [x.get("clean_top1") for x in m],
            "starts_per_epoch": h.starts.tolist() if h.columns.numel() == len(sampler_cb.num_positions) else None,
            "hit_rate": sum(late) / len(late) if late else None}


def run_experiment(config: Dict[str, Any], policy: Any = None,
                   callback: Optional[StochasticSoftmaxCallback] = None) -> Dict[str, Any]:
    """Train and test one model; returns a JSON-serialisable dict (see the module docstring).

    ``policy``: the sampling policy instead of ``config["method"]`` (anything ``StochasticSoftmaxCallback(policy=)``
    takes, with ``config["policy_args"]``); ``callback``: a ready ``StochasticSoftmaxCallback`` (then ``method``,
    ``policy_args``, ``gamma_s``, the schedule and ``scoring`` of ``config`` are not used for sampling).

    Keys of the result: ``config`` (the merged settings), ``test`` (``{pooling_key(gamma_p): {"top1",
    "mean_class_acc", ["top5"], ["eer_acc"]}}``, keys as the module logs them: ``"gp0"``, ``"gp1e06"``),
    ``epochs`` (epochs trained), ``best_epoch`` (epoch of the tested weights), ``hit_rate`` (mean hit rate over
    epochs >= W+E, the exploitation phase of TSS, same epochs for every method), ``hit_rate_per_epoch``,
    ``phase_per_epoch``, ``scored_per_epoch`` (clean-scored clips applied), ``clean_top1_per_epoch``,
    ``starts_per_epoch``, ``gmacs``, ``gmacs_by_bins`` / ``test_by_bins`` (when
    ``test_num_bins``), ``train_curve`` / ``val_curve`` (per-epoch ``train/loss_epoch``, ``train/top1`` and
    ``val/top1``), ``seconds``.
    """
    if policy is not None and callback is not None:
        raise ValueError("run_experiment: give policy= or callback=, not both")
    cfg = _merge(config)
    torch.set_num_threads(int(cfg["threads"]))
    t0, c0 = time.perf_counter(), time.process_time()
    L.seed_everything(cfg["seed"], workers=True, verbose=False)
    with tempfile.TemporaryDirectory(prefix="lt_exp_") as tmp:
        dm, model, sampler_cb, curves, ckpt, trainer = _build(cfg, cfg["out_dir"] or tmp, policy, callback)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*(num_workers|does not have many workers|sync_dist).*")
            trainer.fit(model, datamodule=dm)
            result_fit = {"fit_seconds": round(time.perf_counter() - t0, 1),
                          "fit_cpu_seconds": round(time.process_time() - c0, 1)}
            epochs = int(trainer.current_epoch)
            best_epoch = epochs - 1
            if ckpt is not None and ckpt.best_model_path:
                state = torch.load(ckpt.best_model_path, map_location="cpu", weights_only=False)
                model.load_state_dict(state["state_dict"])
                best_epoch = int(state.get("epoch", best_epoch))
            result = {"config": cfg, "policy": sampler_cb.mode, "epochs": epochs, "best_epoch": best_epoch,
                      **result_fit, **_test(cfg, trainer, model, dm)}
    result.update(_sampler_summary(cfg, sampler_cb))
    result["train_curve"], result["val_curve"] = curves.train, curves.val
    result["seconds"] = round(time.perf_counter() - t0, 1)
    return result
