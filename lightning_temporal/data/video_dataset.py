"""Whole videos for evaluation: every clip position at a stride (``mode="clips"``) or all frames (``"dense"``).

Each video is decoded once (``VideoReader.read_all``), goes through the deterministic clean transform once,
and its clips are gathered from that tensor by index: a frame shared by overlapping clips is decoded and
transformed once.
"""
from __future__ import annotations

import warnings
from typing import Callable, Dict, List, Optional, Sequence, Union

import torch
from torch.utils.data import Dataset

from lightning_temporal.data.dataset import DecodeSize, SkippedClip, _decode_size, num_clip_positions
from lightning_temporal.data.manifest import VideoManifest
from lightning_temporal.data.video import VideoError, VideoReader

__all__ = ["VideoDataset", "collate_videos", "eval_clip_starts"]

EVAL_MODES = ("clips", "dense")


def eval_clip_starts(num_positions: int, clip_stride: int) -> torch.Tensor:
    """int64 [K]: starts 0, s, 2s, ... covering the video, plus the last position so its end is seen."""
    starts = torch.arange(0, num_positions, clip_stride, dtype=torch.int64)
    if int(starts[-1]) != num_positions - 1:
        starts = torch.cat([starts, torch.tensor([num_positions - 1])])
    return starts


class VideoDataset(Dataset):
    """Map-style dataset of whole videos for validation, test and predict; ``dataset[i]`` is video ``i``.

    >>> from lightning_temporal.data.manifest import VideoManifest, VideoRecord
    >>> m = VideoManifest([VideoRecord("a.mp4", 0, num_frames=40)], ["walk"])
    >>> VideoDataset(m, clip_len=16, clip_stride=4).clip_starts(0).tolist()
    [0, 4, 8, 12, 16, 20, 24]

    ``mode="clips"``: item ``"clips"`` float32 ``[K, C, F, H, W]``, the clips at ``clip_starts(i)`` (every
    ``clip_stride``-th position plus the last). ``mode="dense"``: item ``"video"`` float32 ``[C, L, H, W]``
    (at least one clip span long: short videos repeat their last frame) for one fully convolutional pass.
    Both carry ``"label"``, ``"video_idx"``, ``"num_frames"`` and ``"starts"`` (clip starts, or frame
    indices 0..L-1 in dense mode). ``transform`` maps uint8 ``[L, H, W, 3]`` to float ``[C, L, H, W]``
    (use the clean transform). A video that fails to decode is skipped and reported by
    :func:`collate_videos` (or raises with ``strict=True``).
    """

    def __init__(self, manifest: VideoManifest, clip_len: int, stride: int = 1,
                 transform: Optional[Callable[[torch.Tensor], torch.Tensor]] = None, *, mode: str = "clips",
                 clip_stride: Optional[int] = None, strict: bool = False, decode_size: DecodeSize = None):
        if mode not in EVAL_MODES:
            raise ValueError(f"mode={mode!r}; one of {EVAL_MODES} is allowed")
        for name, v in (("clip_len", clip_len), ("stride", stride)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name}={v!r}; a positive integer is allowed")
        clip_stride = max(1, clip_len // 4) if clip_stride is None else clip_stride
        if not isinstance(clip_stride, int) or isinstance(clip_stride, bool) or clip_stride < 1:
            raise ValueError(f"clip_stride={clip_stride!r}; a positive integer (frames between evaluated clip "
                             "starts) is allowed")
        self.manifest, self.clip_len, self.stride = manifest, clip_len, stride
        self.transform, self.mode, self.clip_stride = transform, mode, clip_stride
        self.strict, self.decode_size = bool(strict), decode_size
        self.span = (clip_len - 1) * stride + 1
        self.num_positions = num_clip_positions(manifest.num_frames, clip_len, stride)

    def __len__(self) -> int:
        return len(self.manifest)

    def clip_starts(self, i: int) -> torch.Tensor:
        return eval_clip_starts(int(self.num_positions[i]), self.clip_stride)

    def _frames(self, i: int) -> torch.Tensor:
        record = self.manifest[i]
        with VideoReader(record.path) as reader:
            frames = reader.read_all(size=_decode_size(record, self.decode_size))  # L, H, W, 3 uint8
        if frames.shape[0] < self.span:  # short video: repeat the last frame up to one clip span
            frames = torch.cat([frames, frames[-1:].expand(self.span - frames.shape[0], -1, -1, -1)])
        return frames

    def __getitem__(self, i: int) -> Union[Dict[str, object], SkippedClip]:
        if not 0 <= i < len(self.manifest):
            raise IndexError(f"video {i} out of range: the manifest has {len(self.manifest)} videos")
        record = self.manifest[i]
        try:
            frames = self._frames(i)
        except VideoError as err:
            message = f"video {i} ({record.source or record.path}): {err}"
            if self.strict:
                raise VideoError(message) from err
            warnings.warn(f"skipping evaluation of {message} (strict=False); it is counted as skipped")
            return SkippedClip(i, 0, message)
        video = self.transform(frames) if self.transform is not None else frames.permute(3, 0, 1, 2).float() / 255
        item: Dict[str, object] = {"label": record.label, "video_idx": i, "num_frames": int(record.num_frames)}
        if self.mode == "dense":
            item["video"] = video  # C, L, H, W
            item["starts"] = torch.arange(video.shape[1])
            return item
        starts = self.clip_starts(i)
        idx = starts[:, None] + self.stride * torch.arange(self.clip_len)[None, :]  # K, F frame indices
        item["clips"] = video[:, idx].permute(1, 0, 2, 3, 4).contiguous()  # C, K, F, H, W -> K, C, F, H, W
        item["starts"] = starts
        return item


def collate_videos(items: Sequence[Union[Dict[str, object], SkippedClip]]) -> Dict[str, object]:
    """Batch of :class:`VideoDataset` items.

    Clips mode: ``"clips"`` ``[sum K, C, F, H, W]`` (all videos' clips, batched across videos),
    ``"clip_counts"`` int64 ``[V]``, ``"starts"`` int64 ``[sum K]``. Dense mode: ``"video"`` ``[V, C, Lmax,
    H, W]`` (shorter videos padded by repeating their last frame) and ``"lengths"`` int64 ``[V]``. Both:
    ``"label"``, ``"video_idx"``, ``"num_frames"`` int64 ``[V]`` and ``"skipped"``/``"skip_errors"``.
    """
    ok: List[Dict[str, object]] = [it for it in items if not isinstance(it, SkippedClip)]
    bad = [it for it in items if isinstance(it, SkippedClip)]
    batch: Dict[str, object] = {
        "label": torch.tensor([it["label"] for it in ok], dtype=torch.int64),
        "video_idx": torch.tensor([it["video_idx"] for it in ok], dtype=torch.int64),
        "num_frames": torch.tensor([it["num_frames"] for it in ok], dtype=torch.int64),
        "skipped": torch.tensor([it.video_idx for it in bad], dtype=torch.int64),
        "skip_errors": [it.error for it in bad],
    }
    if ok and "clips" in ok[0]:
        batch["clips"] = torch.cat([it["clips"] for it in ok])
        batch["clip_counts"] = torch.tensor([it["clips"].shape[0] for it in ok], dtype=torch.int64)
        batch["starts"] = torch.cat([it["starts"] for it in ok])
    elif ok:
        lengths = [it["video"].shape[1] for it in ok]
        longest = max(lengths)
        batch["video"] = torch.stack([
            torch.cat([it["video"], it["video"][:, -1:].expand(-1, longest - n, -1, -1)], dim=1)
            for it, n in zip(ok, lengths)])
        batch["lengths"] = torch.tensor(lengths, dtype=torch.int64)
    return batch
