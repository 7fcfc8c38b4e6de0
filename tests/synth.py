"""The tiny embedded dataset the Lightning-level tests train on, and the transform settings they share.

    >>> paths = tiny_dataset(tmp_path, num_train=6, num_val=2, num_test=2)    # doctest: +SKIP
    >>> TemporalDataModule(train_manifest=paths["train"], ..., **CROP)        # doctest: +SKIP
"""
from __future__ import annotations

import csv

from lightning_temporal.data.synthetic import generate_dataset

#: 24x24 crops of the 32x32 synthetic frames, with a fixed normalisation
CROP = dict(crop_size=24, short_side=32, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))


def tiny_dataset(root, num_train: int, num_val: int, num_test: int, min_frames: int = 20, max_frames: int = 36):
    """``generate_dataset`` at 32x32, in this process, quietly: ``{split: manifest path}``."""
    return generate_dataset(str(root), num_train=num_train, num_val=num_val, num_test=num_test, size=32,
                            min_frames=min_frames, max_frames=max_frames, progress=False, num_workers=0)


def read_rows(path) -> list:
    """The rows of a CSV file (a manifest, a predictions file) as dicts."""
    with open(path, newline="") as f:
        return list(csv.DictReader(f))
