"""Programmatic experiments on the embedded synthetic data: one call = one trained and tested model.

``run_experiment(config) -> dict`` builds the :class:`TemporalDataModule`, the :class:`VideoClassifier`, a
:class:`StochasticSoftmaxCallback` in the requested mode and a CPU ``Trainer``; it trains (optionally under
early stopping on ``val/top1``), tests the checkpoint kept by early stopping (or the last weights) at every
requested pooling temperature γ_p, and returns one plain dict (JSON-serialisable) with the test accuracies,
the sampler's hit rate per epoch, the number of epochs and the average GMACs per test clip.
``benchmarks/reproduce.py`` and ``tests/test_reproduce.py`` share it.

Example::

    >>> from lightning_temporal.experiments.runner import run_experiment   # doctest: +SKIP
    >>> row = run_experiment({"method": "tss", "gamma_s": 1.0, "max_epochs": 20,
    ...                       "data": {"root": "data_cache/repro_multiclass"}})  # doctest: +SKIP
    >>> row["test"]["1"]["top1"], row["hit_rate"]                          # doctest: +SKIP
"""
from __future__ import annotations

import copy
import math
import os
import tempfile
import time
import warnings
from typing import Any, Dict, List, Optional

import lightning as L
import torch

__all__ = ["DEFAULTS", "METHODS", "run_experiment", "gamma_key"]

METHODS = ("uniform", "tss", "prior", "reinforce")

#: every key run_experiment reads, with its default (the reproduction settings, tuned for 2 CPU cores)
DEFAULTS: Dict[str, Any] = {
    "method": "tss",                 # uniform | tss | prior | reinforce
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


def gamma_key(g: float) -> str:
    """Key of a pooling temperature in the result dicts: ``"0"``, ``"1"``, ``"1e+06"``."""
    return f"{float(g):g}"


def _merge(config: Dict[str, Any]) -> Dict[str, Any]:
    unknown = set(config) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"run_experiment: unknown config key(s) {sorted(unknown)}; allowed: {sorted(DEFAULTS)}")
    cfg = copy.deepcopy(DEFAULTS)
    cfg.update(copy.deepcopy(config))
    if cfg["method"] not in METHODS:
        raise ValueError(f"run_experiment: method={cfg['method']!r}; one of {METHODS} is allowed")
    if cfg["eval_clip_stride"] is None:
        cfg["eval_clip_stride"] = max(1, cfg["clip_len"] // 2)
    if "root" not in cfg["data"]:
        raise ValueError("run_experiment: config['data'] needs 'root' (the dataset folder)")
    return cfg


def _test_metrics(trainer, model, dm, gammas: List[float]) -> Dict[str, Dict[str, float]]:
    model.gammas = [float(g) for g in gammas]  # first = the logged default, the rest under val/gp*/...
    from lightning_temporal.metrics import classification_metrics
    from lightning_temporal.module import _gamma_key

    model.gamma_p = model.gammas[0]
    model.metrics = torch.nn.ModuleDict({
        f"{stage}_{_gamma_key(g)}": classification_metrics(
            model.num_classes, prefix=f"{stage}/" if g == model.gamma_p else f"{stage}/{_gamma_key(g)}/")
        for stage in ("val", "test") for g in model.gammas})
    out = trainer.test(model, datamodule=dm, verbose=False)[0]
    res = {}
    for g in model.gammas:
        prefix = "test/" if g == model.gamma_p else f"test/{_gamma_key(g)}/"
        res[gamma_key(g)] = {k[len(prefix):]: float(v) for k, v in out.items()
                             if k.startswith(prefix) and "/" not in k[len(prefix):]}
    return res


def _gmacs(model, dm, n: int) -> Optional[float]:
    """Average GMACs per clip over the clips of the first test videos (what SGS actually ran)."""
    if n <= 0:
        return None
    from lightning_temporal.flops import count_gmacs

    from lightning_temporal.data.video_dataset import gather_clips

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


def run_experiment(config: Dict[str, Any]) -> Dict[str, Any]:
    """Train and test one model; returns a JSON-serialisable dict (see the module docstring).

    Keys of the result: ``config`` (the merged settings), ``test`` (``{gamma_key: {"top1", "mean_class_acc",
    ["eer_acc"]}}``), ``epochs`` (epochs trained), ``best_epoch`` (epoch of the tested weights),
    ``hit_rate`` (mean hit rate over epochs >= W+E, the exploitation phase of TSS, same epochs for every
    method), ``hit_rate_per_epoch``, ``phase_per_epoch``, ``gmacs``, ``gmacs_by_bins`` / ``test_by_bins``
    (when ``test_num_bins``), ``train_curve`` / ``val_curve`` (per-epoch ``train/loss_epoch``, ``train/top1``
    and ``val/top1``), ``seconds``.
    """
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

    from lightning_temporal.callbacks.stochastic_softmax import StochasticSoftmaxCallback
    from lightning_temporal.datamodule import TemporalDataModule
    from lightning_temporal.module import VideoClassifier

    cfg = _merge(config)
    torch.set_num_threads(int(cfg["threads"]))
    t0 = time.perf_counter()
    L.seed_everything(cfg["seed"], workers=True, verbose=False)
    dm = TemporalDataModule(
        synthetic=dict(cfg["data"]), clip_len=cfg["clip_len"], crop_size=cfg["crop_size"],
        short_side=cfg["short_side"], flip=cfg["flip"], mean=[0.5] * 3, std=[0.25] * 3, batch_size=cfg["batch_size"],
        eval_batch_size=cfg["eval_batch_size"], eval_clip_stride=cfg["eval_clip_stride"],
        num_workers=cfg["num_workers"], seed=cfg["seed"], progress=cfg["progress"],
        clean_clips=cfg["method"] in ("tss", "reinforce") and cfg["scoring"] == "clean")
    num_classes = dm.num_classes
    lr, wd = float(cfg["lr"]), float(cfg["weight_decay"])
    model = VideoClassifier(
        cfg["backbone"], num_classes=num_classes, backbone_kwargs=cfg["backbone_kwargs"] or None,
        sgs=cfg["sgs"], gamma_p=cfg["gamma_p"], report_gamma_p=[],
        optimizer=lambda p: torch.optim.Adam(p, lr=lr, weight_decay=wd))
    mode = cfg["method"]
    sampler_cb = StochasticSoftmaxCallback(
        gamma_s=cfg["gamma_s"] if mode in ("tss", "prior") else 0.0, warmup_epochs=cfg["warmup_epochs"],
        exploration_epochs=cfg["exploration_epochs"], scoring=cfg["scoring"], mode=mode,
        track_videos=cfg["track_videos"], seed=cfg["seed"], reinforce_lr=cfg["reinforce_lr"])
    tmp = None
    out_dir = cfg["out_dir"]
    if out_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="lt_exp_")
        out_dir = tmp.name
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
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(num_workers|does not have many workers|sync_dist).*")
        trainer.fit(model, datamodule=dm)
        epochs = int(trainer.current_epoch)
        best_epoch = epochs - 1
        if ckpt is not None and ckpt.best_model_path:
            state = torch.load(ckpt.best_model_path, map_location="cpu", weights_only=False)
            model.load_state_dict(state["state_dict"])
            best_epoch = int(state.get("epoch", best_epoch))
        dm.setup("test")
        test = _test_metrics(trainer, model, dm, cfg["test_gamma_p"])
        result: Dict[str, Any] = {"config": cfg, "test": test, "epochs": epochs, "best_epoch": best_epoch}
        result["gmacs"] = _gmacs(model, dm, int(cfg["gmacs_clips"]))
        if cfg["test_num_bins"]:
            temporal = getattr(model.backbone, "temporal", None)
            if temporal is None:
                raise ValueError("run_experiment: test_num_bins needs a backbone with SGS (config['sgs'])")
            trained_bins = temporal.num_bins
            result["test_by_bins"], result["gmacs_by_bins"] = {}, {}
            for b in cfg["test_num_bins"]:
                temporal.num_bins = int(b)  # SPEC §2.6: change B at inference only, one line
                result["test_by_bins"][str(b)] = _test_metrics(trainer, model, dm, cfg["test_gamma_p"])
                result["gmacs_by_bins"][str(b)] = _gmacs(model, dm, int(cfg["gmacs_clips"]))
            temporal.num_bins = trained_bins
    m = sampler_cb.metrics
    first = cfg["warmup_epochs"] + cfg["exploration_epochs"]
    result["hit_rate_per_epoch"] = [x.get("hit_rate") for x in m]
    result["phase_per_epoch"] = [x["phase"] for x in m]
    h = sampler_cb.history  # starts [E, V] of every video (keep_history="all"), -1 = not trained
    result["starts_per_epoch"] = h.starts.tolist() if h.columns.numel() == len(sampler_cb.num_positions) else None
    late = [x["hit_rate"] for x in m if x["epoch"] >= first and x.get("hit_rate") is not None]
    result["hit_rate"] = sum(late) / len(late) if late else None
    result["train_curve"], result["val_curve"] = curves.train, curves.val
    result["seconds"] = round(time.perf_counter() - t0, 1)
    if tmp is not None:
        tmp.cleanup()
    return result
