"""What :class:`~lightning_temporal.callbacks.StochasticSoftmaxCallback` reads of the training manifest: the
fingerprint its tables are saved with (so a resume on other videos fails, naming the first differing row) and the
event windows behind the hit rate."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from lightning_temporal.data.manifest import path_fingerprint

__all__ = ["ManifestFingerprint", "EventWindows"]


class ManifestFingerprint:
    """Paths (hashed folder/file names) and clip positions of the training videos, in order.

    ``state()`` is what a checkpoint keeps; :meth:`check` raises ``ValueError`` naming the first row of this
    manifest that differs from a saved one.
    """

    def __init__(self, manifest, num_positions: Tensor) -> None:
        paths = getattr(manifest, "paths", None)
        if paths is not None and len(paths) != num_positions.numel():
            raise ValueError(f"train_manifest has {len(paths)} videos but the clip sampler "
                             f"{num_positions.numel()}; build the sampler from the training manifest")
        records = getattr(manifest, "records", None)
        self.paths = path_fingerprint(paths) if paths is not None else None
        self.num_positions = num_positions.clone()
        self.sources = [getattr(r, "source", "") or r.path for r in records] if records is not None else None
        self.names = list(paths) if paths is not None else None

    def state(self) -> dict:
        return {"paths": self.paths, "num_positions": self.num_positions}

    def check(self, saved: dict) -> None:
        """Raise, naming the first differing row, unless ``saved`` describes this training manifest."""
        n_saved, n_mine = torch.as_tensor(saved["num_positions"]), self.num_positions
        todo = ("Resume with the training manifest the checkpoint was trained on (the same rows in the same "
                "order), with the same clip_len and stride, or start a new run without ckpt_path: the score "
                "tables belong to that manifest")
        head = "the checkpoint's StochasticSoftmaxCallback tables were learned on another training manifest"
        if n_saved.numel() != n_mine.numel():
            raise ValueError(f"{head}: it had {n_saved.numel()} videos, this one has {n_mine.numel()}. {todo}")
        p_saved, p_mine = saved.get("paths"), self.paths
        same_path = torch.ones_like(n_mine, dtype=torch.bool)
        if p_saved is not None and p_mine is not None:
            same_path = torch.as_tensor(p_saved) == p_mine
        bad = (~same_path | (n_saved != n_mine)).nonzero().flatten()
        if bad.numel() == 0:
            return
        i = int(bad[0])
        where = f"video {i}"
        if self.names is not None:
            where += f" ({self.sources[i] if self.sources else ''}: {self.names[i]})"
        if not bool(same_path[i]):
            moved = (torch.as_tensor(p_saved) == p_mine[i]).nonzero().flatten()
            what = (f"{where} was video {int(moved[0])} in the checkpoint's manifest (the rows are reordered)"
                    if moved.numel() else f"{where} is not in the checkpoint's manifest (another video is in its "
                                           "row)")
        else:
            what = (f"{where} has {int(n_mine[i])} clip positions here, {int(n_saved[i])} in the checkpoint "
                    "(another frame count, clip_len or stride)")
        raise ValueError(f"{head}: {what}; {bad.numel()} of {n_mine.numel()} rows differ. {todo}")


class EventWindows:
    """Event windows ``[V, 2]`` (start, end exclusive; -1 = unknown) of the training videos, and the hit rate."""

    def __init__(self, events: Tensor, span: int) -> None:
        self.events, self.span = events, span

    @classmethod
    def from_manifest(cls, manifest, num_videos: int, span: Optional[int]) -> Optional["EventWindows"]:
        """From ``manifest.events``; None when it has none (or no clip span is known). ``ValueError`` on a shape
        that is not one window per video."""
        ev = getattr(manifest, "events", None)
        if ev is None or span is None:
            return None
        ev = torch.as_tensor(ev, dtype=torch.int64)
        if ev.shape != (num_videos, 2):
            raise ValueError(f"train_manifest.events has shape {tuple(ev.shape)}; expected ({num_videos}, 2): "
                             "one (event_start, event_end) per training video, -1 where unknown")
        return cls(ev, span) if bool((ev >= 0).all(1).any()) else None

    def hit_rate(self, starts: Tensor) -> Optional[float]:
        """Fraction of the clips ``[t, t + span)`` (``starts`` int [V], -1 = not trained) that overlap their
        video's event window, over the videos with a known window and a start; None when there are none."""
        es, ee = self.events[:, 0], self.events[:, 1]
        t = starts.to(torch.int64)
        valid = (t >= 0) & (es >= 0) & (ee >= 0)
        if not bool(valid.any()):
            return None
        hit = (t < ee) & (t + self.span > es)
        return float((hit & valid).sum()) / float(valid.sum())
