"""``SGSFeatureMapLogger``: input vs SGS output feature maps of a validation clip (ATFR seed Fig. A.1)."""
from __future__ import annotations

from typing import Any, Optional

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_only

from lightning_temporal.models.sgs import SimilarityGuidedSampling
from lightning_temporal.callbacks.figures import save_and_log_figure
from lightning_temporal.data.video_dataset import gather_clips
from lightning_temporal.plots.feature_maps import plot_sgs_feature_maps

__all__ = ["SGSFeatureMapLogger"]


def find_sgs(module: torch.nn.Module) -> Optional[SimilarityGuidedSampling]:
    """The first Similarity Guided Sampling layer inside ``module`` (None when there is none)."""
    return next((m for m in module.modules() if isinstance(m, SimilarityGuidedSampling)), None)


class SGSFeatureMapLogger(Callback):
    """After validation, draws the feature maps entering the model's SGS layer and the bins it outputs for
    the first validation clip, saves ``sgs_maps_epoch{E:03d}.png`` and logs it as an image.

    >>> trainer = Trainer(callbacks=[SGSFeatureMapLogger(every_n_epochs=5)])    # doctest: +SKIP

    Args:
        every_n_epochs: draw after every n-th validation epoch.
        out_dir: folder of the PNGs; default ``<trainer.log_dir>/sgs_maps``.
        channels, frames: how many channels and time steps to draw.
    """

    def __init__(self, every_n_epochs: int = 1, out_dir: Optional[str] = None, channels: int = 4, frames: int = 8):
        if not isinstance(every_n_epochs, int) or every_n_epochs < 1:
            raise ValueError(f"every_n_epochs={every_n_epochs!r}; a positive integer is allowed")
        self.every_n_epochs, self.out_dir, self.channels, self.frames = every_n_epochs, out_dir, channels, frames
        self.saved: list = []
        self._clip: Optional[torch.Tensor] = None

    def setup(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", stage: str) -> None:
        if find_sgs(pl_module) is None:
            raise ValueError("SGSFeatureMapLogger needs a model with a SimilarityGuidedSampling layer; build the "
                             "backbone with sgs={...} (model.sgs in a recipe) or drop this callback")

    def on_validation_batch_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", batch: Any,
                                  batch_idx: int, dataloader_idx: int = 0) -> None:
        if batch_idx == 0 and batch.get("label") is not None and batch["label"].numel():
            first = torch.zeros(1, dtype=torch.int64)
            self._clip = (gather_clips(batch["video"], first, batch["starts"][:1], batch["clip_len"], batch["stride"])
                          if "clip_counts" in batch else batch["video"][:1]).detach()  # first clip, or first video

    @rank_zero_only
    def on_validation_epoch_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        if self._clip is None or trainer.sanity_checking or (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        sgs = find_sgs(pl_module)
        seen = {}
        handle = sgs.register_forward_hook(lambda m, inp, out: seen.update(inp=inp[0], out=out[0], mask=out[1]))
        try:
            with torch.no_grad():
                pl_module.score_clips(self._clip)
        finally:
            handle.remove()
        clip = self._clip[0].float()
        clip = (clip - clip.min()) / (clip.max() - clip.min()).clamp(min=1e-6)  # undo normalisation for display
        fig = plot_sgs_feature_maps(seen["inp"], seen["out"], seen["mask"], self.channels, self.frames, clip=clip)
        self.saved.append(save_and_log_figure(trainer, fig, self.out_dir, "sgs_maps", "sgs_maps"))
