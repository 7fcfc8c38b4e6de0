"""``PredictionWriter``: what ``predict`` computed, written to one CSV file per run (and relevance curves)."""
from __future__ import annotations

import csv
import os
import warnings
from typing import Any, Dict, List, Optional, Sequence

import lightning.pytorch as pl
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.utilities import rank_zero_info

from lightning_temporal.data.frames import video_name
from lightning_temporal.plots.relevance_curve import plot_relevance_curve

__all__ = ["PredictionWriter"]


def _numbers(values, fmt: str = "{:.6g}") -> str:
    return " ".join(fmt.format(float(v)) for v in values)


class PredictionWriter(BasePredictionWriter):
    """Writes the predictions of ``Trainer.predict`` on whole videos (``VideoClassifier.predict_step``) to
    ``<out_dir>/predictions.csv``, one row per video, in the order of the predict manifest:

    ``video_idx`` (row of the manifest), ``video`` (path), ``label`` (class name from the manifest), ``pred``
    (predicted class), ``prob_<class>`` for every class (softmax of the video logits pooled at the model's ``gamma_p``), and the relevance curve:
    ``clip_starts`` (first frame of each clip position), ``clip_scores`` (the predicted class's clip logit
    there) and ``clip_weights`` (its softmax-pooling weight), each a space-separated list; with SGS in the model,
    ``clip_bins`` (the B' each clip kept, a list), ``sgs_bins`` (their mean) and ``gmacs_per_clip`` (the mean
    GMACs per clip of what ran, empty where the model's cost is not a function of one B'); and ``error`` for a
    video that could not be decoded (its other columns empty). With ``figures=True`` it also draws each video's
    relevance curve to ``<out_dir>/curves/<video_idx>_<video file name>.png`` (e.g. ``curves/000000_test_00000.png``). The path written is printed at the end.

    >>> trainer = Trainer(callbacks=[PredictionWriter(out_dir="predictions", figures=True)])  # doctest: +SKIP
    >>> trainer.predict(model, datamodule=dm)                                               # doctest: +SKIP
    predictions of 120 videos written to predictions/predictions.csv (curves in predictions/curves)

    Under DDP each rank streams its videos to a part file; rank 0 merges them in video order at the end.

    Args:
        out_dir: folder of the file; default the trainer's ``log_dir`` (with ``lightning-temporal predict``, a
            ``predict/version_N`` folder inside the training run).
        filename: name of the CSV file.
        figures: draw each video's relevance curve (PNG).
        max_figures: draw at most this many (None: all).
    """

    def __init__(self, out_dir: Optional[str] = None, filename: str = "predictions.csv", figures: bool = False,
                 max_figures: Optional[int] = None):
        super().__init__(write_interval="batch")
        if not isinstance(filename, str) or not filename.endswith(".csv") or os.sep in filename:
            raise ValueError(f"filename={filename!r}; a file name ending in .csv (no folder) is allowed")
        if max_figures is not None and (not isinstance(max_figures, int) or max_figures < 0):
            raise ValueError(f"max_figures={max_figures!r}; None or an integer >= 0 is allowed")
        self.out_dir, self.filename, self.figures, self.max_figures = out_dir, filename, bool(figures), max_figures
        self.path: Optional[str] = None  #: the file written by the last run
        self._part = None
        self._writer = None
        self._header: List[str] = []
        self._drawn = 0

    # ------------------------------------------------------------------------------------------- helpers
    @staticmethod
    def _class_names(trainer: "pl.Trainer", num_classes: int) -> List[str]:
        names = getattr(trainer.datamodule, "class_names", None) if trainer.datamodule is not None else None
        return list(names) if names is not None and len(names) == num_classes else [str(k) for k in
                                                                                    range(num_classes)]

    @staticmethod
    def _manifest(trainer: "pl.Trainer"):
        dm = trainer.datamodule
        if dm is not None and hasattr(dm, "manifest"):
            try:
                return dm.manifest("predict")
            except (ValueError, KeyError):
                return None
        return None

    def _span(self, trainer: "pl.Trainer") -> Dict[str, int]:
        dm = trainer.datamodule
        return {"clip_len": int(getattr(dm, "clip_len", 1) or 1), "stride": int(getattr(dm, "stride", 1) or 1)}

    # --------------------------------------------------------------------------------------------- hooks
    def setup(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", stage: str) -> None:
        if stage != "predict":
            return
        out_dir = self.out_dir or trainer.log_dir or trainer.default_root_dir  # log_dir: same on every rank
        self._dir = os.path.abspath(out_dir)
        os.makedirs(self._dir, exist_ok=True)

    def on_predict_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        names = self._class_names(trainer, int(getattr(pl_module, "num_classes", 0) or 0))
        self._names = names
        self._sgs = getattr(pl_module, "sgs_metrics", None) is not None
        sgs = ["clip_bins", "sgs_bins", "gmacs_per_clip"] if self._sgs else []
        self._header = (["video_idx", "video", "label", "pred"] + [f"prob_{n}" for n in names]
                        + ["clip_starts", "clip_scores", "clip_weights"] + sgs + ["error"])
        self._records = self._manifest(trainer)
        self._drawn = 0
        self._part_path = os.path.join(self._dir, f".{self.filename}.rank{trainer.global_rank}.part")
        self._part = open(self._part_path, "w", newline="")
        self._writer = csv.writer(self._part)

    def write_on_batch_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", prediction: Any,
                           batch_indices: Optional[Sequence[int]], batch: Any, batch_idx: int,
                           dataloader_idx: int) -> None:
        for item in prediction:
            v = int(item["video_idx"])
            record = self._records[v] if self._records is not None and v < len(self._records) else None
            path = record.path if record is not None else f"video {v}"
            label = self._names[record.label] if record is not None else (
                self._names[item["label"]] if "label" in item else "")
            if "error" in item:
                self._writer.writerow([v, path, label, ""] + [""] * (len(self._header) - 5) + [item["error"]])
                continue
            pred = int(item["pred"])
            scores = item["curve"][:, pred]
            sgs = []
            if self._sgs:
                sgs = [_numbers(item["clip_bins"], "{:.0f}") if "clip_bins" in item else "",
                       f"{item['sgs_bins']:.4g}" if "sgs_bins" in item else "",
                       f"{item['gmacs']:.6g}" if "gmacs" in item else ""]
            self._writer.writerow([v, path, label, self._names[pred]] + [f"{float(p):.6g}" for p in item["probs"]]
                                  + [_numbers(item["positions"], "{:.0f}"), _numbers(scores),
                                     _numbers(item["weights"])] + sgs + [""])
            if self.figures and (self.max_figures is None or self._drawn < self.max_figures):
                self._draw(trainer, v, path, record, item, scores, pred)
        self._part.flush()

    def _draw(self, trainer, v: int, path: str, record, item, scores, pred: int) -> None:
        event = None
        if record is not None and record.event_start is not None and record.event_end is not None:
            event = (record.event_start, record.event_end)
        span = self._span(trainer)
        num_frames = int(item.get("num_frames", -1))
        if num_frames < 1:
            num_frames = int(item["positions"].max()) + (span["clip_len"] - 1) * span["stride"] + 1
        fig = plot_relevance_curve(item["positions"], scores, weights=item["weights"], num_frames=num_frames,
                                   class_name=self._names[pred], event=event, title=video_name(path),
                                   bins=item.get("clip_bins"), **span)
        folder = os.path.join(self._dir, "curves")
        os.makedirs(folder, exist_ok=True)
        stem = os.path.splitext(video_name(path))[0] if record is not None else "video"
        fig.savefig(os.path.join(folder, f"{v:06d}_{stem}.png"))
        self._drawn += 1

    def on_predict_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        if self._part is not None:
            self._part.close()
            self._part = None
        trainer.strategy.barrier("prediction_writer")
        if trainer.global_rank == 0:
            self._merge(trainer)
        trainer.strategy.barrier("prediction_writer_done")
        self.path = trainer.strategy.broadcast(self.path)

    def _merge(self, trainer: "pl.Trainer") -> None:
        parts = [os.path.join(self._dir, f".{self.filename}.rank{r}.part") for r in range(trainer.world_size)]
        rows: List[List[str]] = []
        for part in parts:
            with open(part, newline="") as f:
                rows += list(csv.reader(f))
        rows.sort(key=lambda r: int(r[0]))  # video order of the manifest, whatever the sharding
        path = os.path.join(self._dir, self.filename)
        if os.path.exists(path):
            warnings.warn(f"{path} exists and is replaced by this run's predictions; give PredictionWriter "
                          "another out_dir or filename to keep both")
        with open(path, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(self._header)
            writer.writerows(rows)
        for part in parts:
            os.remove(part)
        self.path = path
        errors = sum(1 for r in rows if r[-1])
        curves = f" (curves in {os.path.join(self._dir, 'curves')})" if self.figures and self._drawn else ""
        failed = f"; {errors} could not be decoded (see the error column)" if errors else ""
        rank_zero_info(f"predictions of {len(rows)} videos written to {path}{curves}{failed}")
