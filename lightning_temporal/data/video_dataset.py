"""Whole videos for evaluation: every clip position at a stride (``mode="clips"``) or one dense pass (``"dense"``).

Each video is decoded once, at the evaluation size (the decoder resizes to the short side while converting to
RGB), into a uint8 buffer the dataset reuses from video to video, and goes through the deterministic clean
transform once. Both modes hand over that one float video ``[C, L, H, W]``: the clip-wise mode adds the clip
starts, and the model reads its clips as views of the video (:func:`clip_views`, :func:`gather_clips`), so a
frame shared by overlapping clips is decoded, transformed and shipped from a DataLoader worker once.
The tensor ops of :meth:`VideoDataset.__getitem__` run single-threaded (a context that restores the thread
count afterwards), so data loading in the main process or in workers does not fight the model for cores.
"""
from __future__ import annotations

import contextlib
import warnings
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor
from torch.utils.data import Dataset, get_worker_info

from lightning_temporal.checks import check_callable, check_choice, check_instance, check_int
from lightning_temporal.data.dataset import DecodeSize, SkippedClip, check_decode_size, num_clip_positions
from lightning_temporal.data.manifest import VideoManifest, VideoRecord
from lightning_temporal.data.transforms import short_side_size
from lightning_temporal.data.torchcodec_backend import resolve_backend
from lightning_temporal.data.video import VideoError, VideoReader, probe

__all__ = ["VideoDataset", "collate_videos", "eval_clip_starts", "clip_views", "gather_clips", "torch_threads"]

EVAL_MODES = ("clips", "dense")


def eval_clip_starts(num_positions: int, clip_stride: int) -> torch.Tensor:
    """int64 [K]: starts 0, s, 2s, ... covering the video, plus the last position so its end is seen."""
    starts = torch.arange(0, num_positions, clip_stride, dtype=torch.int64)
    if int(starts[-1]) != num_positions - 1:
        starts = torch.cat([starts, torch.tensor([num_positions - 1])])
    return starts


@contextlib.contextmanager
def torch_threads(num_threads: int) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(num_threads)``, then restore the previous count."""
    previous = torch.get_num_threads()
    if previous == num_threads:
        yield
        return
    torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def clip_views(video: Tensor, clip_len: int, stride: int = 1) -> Tensor:
    """Every clip of padded videos as one view (no copy).

    Args:
        video: ``[V, C, L, H, W]``, ``L >= span = (clip_len - 1) * stride + 1``.
    Returns:
        ``[V, L - span + 1, C, clip_len, H, W]``: entry ``[v, t]`` is the clip of frames ``t, t + stride, ...``
        of video ``v``.
    """
    span = (clip_len - 1) * stride + 1
    if video.dim() != 5 or video.shape[2] < span:
        raise ValueError(f"video must be [V, C, L, H, W] with L >= {span} (the clip span), got "
                         f"{tuple(video.shape)}")
    windows = video.unfold(2, span, 1)[..., ::stride]  # V, C, P, H, W, F
    return windows.permute(0, 2, 1, 5, 3, 4)  # V, P, C, F, H, W


def gather_clips(video: Tensor, video_idx: Tensor, starts: Tensor, clip_len: int, stride: int = 1) -> Tensor:
    """Clips ``(video_idx[i], starts[i])`` of padded videos ``[V, C, L, H, W]`` as one contiguous
    ``[n, C, clip_len, H, W]`` tensor (the one copy a convolution needs anyway)."""
    return clip_views(video, clip_len, stride)[video_idx.to(video.device), starts.to(video.device)]


class VideoDataset(Dataset):
    """Map-style dataset of whole videos for validation, test and predict; ``dataset[i]`` is video ``i``.

    >>> from lightning_temporal.data.manifest import VideoManifest, VideoRecord
    >>> m = VideoManifest([VideoRecord("a.mp4", 0, num_frames=40)], ["walk"])
    >>> VideoDataset(m, clip_len=16, clip_stride=4).clip_starts(0).tolist()
    [0, 4, 8, 12, 16, 20, 24]

    Every item carries ``"video"`` float32 ``[C, L, H, W]``, the whole video through ``transform`` (at least
    one clip span long: short videos repeat their last frame), ``"label"``, ``"video_idx"``, ``"num_frames"``,
    ``"clip_len"`` and ``"stride"``; in ``mode="clips"`` also ``"starts"`` int64 ``[K]``, the clip starts of
    :meth:`clip_starts` (every ``clip_stride``-th position plus the last). ``transform`` maps uint8
    ``[L, H, W, 3]`` to float ``[C, L, H, W]`` (use the clean transform). A video that fails to decode is
    skipped and reported by :func:`collate_videos` (or raises with ``strict=True``).

    ``decode_size``: None (decoded size), ``(h, w)``, or an int short side: the decoder resizes while
    converting to RGB (the aspect ratio from the manifest, or from a demux-only probe when the manifest has
    no frame size). ``data_threads``: torch threads of the decode-side tensor ops (restored afterwards).
    ``backend``: ``"pyav"`` (default), ``"torchcodec"`` or ``"auto"``, see
    :func:`~lightning_temporal.data.video.read_clip`.
    """

    def __init__(self, manifest: VideoManifest, clip_len: int, stride: int = 1,
                 transform: Optional[Callable[[torch.Tensor], torch.Tensor]] = None, *, mode: str = "clips",
                 clip_stride: Optional[int] = None, strict: bool = False, decode_size: DecodeSize = None,
                 data_threads: int = 1, backend: str = "pyav"):
        check_instance("manifest", manifest, VideoManifest, hint="read one with read_csv_manifest")
        check_choice("mode", mode, EVAL_MODES)
        for name, v in (("clip_len", clip_len), ("stride", stride), ("data_threads", data_threads)):
            check_int(name, v, minimum=1)
        clip_stride = max(1, clip_len // 4) if clip_stride is None else clip_stride
        check_int("clip_stride", clip_stride, minimum=1, hint="frames between evaluated clip starts")
        check_callable("transform", transform, optional=True, hint="taking uint8 [L, H, W, 3]")
        decode_size = check_decode_size(decode_size)
        self.manifest, self.clip_len, self.stride = manifest, clip_len, stride
        self.transform, self.mode, self.clip_stride = transform, mode, clip_stride
        self.strict, self.decode_size, self.data_threads = bool(strict), decode_size, data_threads
        self.backend = resolve_backend(backend, "VideoDataset backend")
        self.span = (clip_len - 1) * stride + 1
        self.num_positions = num_clip_positions(manifest.num_frames, clip_len, stride)
        self._buffer: Optional[Tensor] = None  # uint8 [N, H, W, 3], reused by every video this process reads

    def __len__(self) -> int:
        return len(self.manifest)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_buffer": None}  # each DataLoader worker grows its own buffer

    def clip_starts(self, i: int) -> torch.Tensor:
        return eval_clip_starts(int(self.num_positions[i]), self.clip_stride)

    def frame_size(self, record: VideoRecord) -> Tuple[int, int]:
        """(h, w) video ``record`` is decoded at: ``decode_size`` resolved against its frame size (from the
        manifest, or from a demux-only probe whose index the reader then reuses)."""
        if isinstance(self.decode_size, tuple):
            return self.decode_size
        height, width = record.height, record.width
        if height is None or width is None:
            info = probe(record.path, exact=False)
            height, width = info.height, info.width
        return (height, width) if self.decode_size is None else short_side_size(height, width, self.decode_size)

    def decode(self, i: int) -> Tensor:
        """uint8 ``[max(L, span), H, W, 3]``: every frame of video ``i`` at the evaluation size, the last one
        repeated up to one clip span. Usually a view of the dataset's reused buffer: valid until the next call.
        Raises ``VideoError`` when the video cannot be decoded."""
        record = self.manifest[i]
        size = self.frame_size(record)
        with VideoReader(record.path, backend=self.backend) as reader:
            # The buffer is sized by the file's own count, never by the manifest's (a count that was not checked
            # against the file, e.g. read with probe=False, must not size an allocation).
            need = max(reader.num_frames, self.span)
            buf = self._buffer
            if buf is None or len(buf) < need or tuple(buf.shape[1:3]) != size:
                rows = max(need, len(buf) if buf is not None and tuple(buf.shape[1:3]) == size else 0)
                buf = self._buffer = torch.empty((rows, size[0], size[1], 3), dtype=torch.uint8)
            # decode_size None: frames at their own size (the probed size only shapes the buffer)
            frames = reader.read_all(size=None if self.decode_size is None else size, out=buf)  # L, H, W, 3
        n = frames.shape[0]
        if n < self.span:  # short video: repeat the last frame up to one clip span
            if frames.data_ptr() == buf.data_ptr():
                buf[n:self.span] = buf[n - 1]
                return buf[:self.span]
            return torch.cat([frames, frames[-1:].expand(self.span - n, -1, -1, -1)])
        return frames

    def __getitem__(self, i: int) -> Union[Dict[str, object], SkippedClip]:
        if not 0 <= i < len(self.manifest):
            raise IndexError(f"video {i} out of range: the manifest has {len(self.manifest)} videos")
        record = self.manifest[i]
        with torch_threads(self.data_threads):
            try:
                frames = self.decode(i)
            except VideoError as err:
                message = f"video {i} ({record.source or record.path}): {err}"
                if self.strict:
                    raise VideoError(message) from err
                warnings.warn(f"skipping evaluation of {message} (strict=False); it is counted as skipped")
                return SkippedClip(i, 0, message)
            if self.transform is not None:
                video = self.transform(frames)
                if video.untyped_storage().data_ptr() == self._buffer.untyped_storage().data_ptr():
                    video = video.clone()  # a transform that returned a view: the buffer is reused next video
            else:
                video = frames.permute(3, 0, 1, 2).float().div_(255)
        item: Dict[str, object] = {"label": record.label, "video_idx": i, "num_frames": int(record.num_frames),
                                   "video": video, "clip_len": self.clip_len, "stride": self.stride}  # C, L, H, W
        if self.mode == "clips":
            item["starts"] = self.clip_starts(i)
        return item


def _padded_videos(videos: List[Tensor]) -> Tensor:
    """``[V, C, Lmax, H, W]``, shorter videos repeating their last frame. One video: a view, no copy. In a
    DataLoader worker the batch is allocated in shared memory, so handing it to the main process copies nothing."""
    if len(videos) == 1:
        return videos[0][None]
    longest = max(v.shape[1] for v in videos)
    c, _, h, w = videos[0].shape
    out = torch.empty((len(videos), c, longest, h, w), dtype=videos[0].dtype)
    if get_worker_info() is not None:
        out.share_memory_()
    for k, v in enumerate(videos):  # a copy per video of the batch (eval_batch_size, a handful)
        n = v.shape[1]
        out[k, :, :n] = v
        out[k, :, n:] = v[:, -1:]
    return out


def collate_videos(items: Sequence[Union[Dict[str, object], SkippedClip]]) -> Dict[str, object]:
    """Batch of :class:`VideoDataset` items.

    Both modes: ``"video"`` ``[V, C, Lmax, H, W]`` (shorter videos padded by repeating their last frame),
    ``"lengths"`` int64 ``[V]`` (frames of each video, at least one clip span), ``"label"``, ``"video_idx"``,
    ``"num_frames"`` int64 ``[V]``, ``"clip_len"``, ``"stride"`` (ints) and ``"skipped"``/``"skip_errors"``.
    Clips mode also: ``"starts"`` int64 ``[sum K]`` (every video's clip starts, in video order) and
    ``"clip_counts"`` int64 ``[V]``; read the clips with :func:`gather_clips`.
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
    if not ok:
        return batch
    batch["video"] = _padded_videos([it["video"] for it in ok])
    batch["lengths"] = torch.tensor([it["video"].shape[1] for it in ok], dtype=torch.int64)
    batch["clip_len"], batch["stride"] = int(ok[0]["clip_len"]), int(ok[0]["stride"])
    if "starts" in ok[0]:
        batch["starts"] = torch.cat([it["starts"] for it in ok])
        batch["clip_counts"] = torch.tensor([it["starts"].numel() for it in ok], dtype=torch.int64)
    return batch
