"""Saving a figure as PNG and logging it through whatever logger the Trainer has."""
from __future__ import annotations

import os
from typing import Optional

import lightning.pytorch as pl
from matplotlib.figure import Figure

from lightning_temporal.plots.sampling_map import figure_to_array

__all__ = ["save_and_log_figure"]


def save_and_log_figure(trainer: "pl.Trainer", fig: Figure, out_dir: Optional[str], subdir: str, tag: str) -> str:
    """Save ``fig`` as ``<out_dir or log_dir/subdir>/<tag>_epoch{E:03d}.png`` and log it as an image
    (TensorBoard's ``add_image`` or a logger's ``log_image``; a CSV logger only gets the file). Returns the path."""
    out_dir = out_dir or os.path.join(trainer.log_dir or trainer.default_root_dir, subdir)
    os.makedirs(out_dir, exist_ok=True)
    epoch = trainer.current_epoch
    path = os.path.join(out_dir, f"{tag}_epoch{epoch:03d}.png")
    fig.savefig(path)
    experiment = getattr(trainer.logger, "experiment", None)
    if hasattr(experiment, "add_image"):  # TensorBoard
        experiment.add_image(tag, figure_to_array(fig), epoch, dataformats="HWC")
    elif hasattr(trainer.logger, "log_image"):  # W&B, Neptune, ...
        trainer.logger.log_image(tag, [path], step=trainer.global_step)
    return path
