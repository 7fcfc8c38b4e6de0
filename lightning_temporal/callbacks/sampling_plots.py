"""``SamplingMapLogger``: sampling maps of tracked videos (seed Fig. S.1, S.3-S.10), each epoch, as PNG."""
from __future__ import annotations

import os
from typing import Optional

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_only

from lightning_temporal.data.frames import video_name
from lightning_temporal.callbacks.stochastic_softmax import StochasticSoftmaxCallback
from lightning_temporal.callbacks.figures import save_and_log_figure
from lightning_temporal.plots.sampling_map import plot_sampling_maps

__all__ = ["SamplingMapLogger"]


class SamplingMapLogger(Callback):
    """Draws the sampling map of each video tracked by :class:`StochasticSoftmaxCallback` (top: the clip
    sampled in each epoch; bottom: the score table / sampling distribution, with the event window or the
    per-frame scores overlaid when the manifest has them), saves it as PNG and logs it as an image.

    >>> trainer = Trainer(callbacks=[StochasticSoftmaxCallback(track_videos=6),      # doctest: +SKIP
    ...                              SamplingMapLogger(every_n_epochs=5)])

    Args:
        every_n_epochs: draw after every n-th training epoch (and always after the last).
        out_dir: folder for ``sampling_map_epoch{E:03d}.png``; default ``<trainer.log_dir>/sampling_maps``.
        gamma: temperature of the plotted distribution; default the callback's ``gamma_s``.
        ncols: panels per row.
    """

    def __init__(self, every_n_epochs: int = 1, out_dir: Optional[str] = None, gamma: Optional[float] = None,
                 ncols: int = 3):
        if not isinstance(every_n_epochs, int) or every_n_epochs < 1:
            raise ValueError(f"every_n_epochs={every_n_epochs!r}; a positive integer is allowed")
        if gamma is not None and gamma < 0:
            raise ValueError(f"gamma={gamma!r}; a temperature >= 0 (or None for the sampler's gamma_s) is allowed")
        self.every_n_epochs, self.out_dir, self.gamma, self.ncols = every_n_epochs, out_dir, gamma, ncols
        self.saved: list = []

    def _sampler_callback(self, trainer: "pl.Trainer") -> StochasticSoftmaxCallback:
        for cb in trainer.callbacks:
            if isinstance(cb, StochasticSoftmaxCallback):
                return cb
        raise ValueError("SamplingMapLogger draws the history of a StochasticSoftmaxCallback; add one to the "
                         "Trainer's callbacks")

    def setup(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", stage: str) -> None:
        if stage == "fit":
            self._sampler_callback(trainer)

    def panels(self, trainer: "pl.Trainer") -> list:
        """One dict of :func:`plot_sampling_maps` arguments per tracked video."""
        cb = self._sampler_callback(trainer)
        history = cb.history
        dm = trainer.datamodule
        manifest = getattr(dm, "train_manifest", None)
        gamma = cb.gamma_s if self.gamma is None else self.gamma
        panels = []
        for v in history.tracked.tolist():
            if v not in history.scores:
                continue
            record = manifest[v] if manifest is not None else None
            num_frames = int(cb.num_positions[v]) + cb.span - 1
            event = None
            if record is not None and record.event_start is not None and record.event_end is not None:
                event = (record.event_start, record.event_end)
            frame_scores = manifest.load_frame_scores(v) if record is not None and record.frame_scores else None
            name = video_name(record.path) if record is not None else f"video {v}"
            panels.append(dict(positions=history.starts_of(v).numpy(), scores=history.scores[v].numpy(),
                               num_frames=num_frames, clip_len=cb.span, gamma=gamma, event=event,
                               frame_scores=None if frame_scores is None else frame_scores.numpy(),
                               phases=history.phases.tolist(), epochs=history.epochs.numpy(),
                               score_epochs=history.epochs.numpy(), title=f"{name} (video {v})"))
        return panels

    @rank_zero_only
    def on_train_epoch_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        epoch = trainer.current_epoch
        last = trainer.max_epochs is not None and epoch + 1 >= trainer.max_epochs
        if (epoch + 1) % self.every_n_epochs and not last and not trainer.should_stop:
            return
        panels = self.panels(trainer)
        if not panels:
            return
        fig = plot_sampling_maps(panels, ncols=self.ncols, title=f"sampling maps after epoch {epoch}")
        self.saved.append(save_and_log_figure(trainer, fig, self.out_dir, "sampling_maps", "sampling_map"))
