"""Clip dataset indexed by clip positions ``(video_idx, start[, clip_seed])``, its collate function and skip
counting.

A sampler (``lightning_temporal.sampling.ClipSampler``) decides which clip of which video is read, and with
which augmentation seed; the dataset only decodes and transforms it. Every random draw of the transform comes
from a generator seeded by the key, never from the global RNG, so the same clip gets the same augmentation in
any worker, on any rank and after a restart. A video that fails to decode is skipped (not replaced by another
one, so the sampler's plan for every other batch stands), warned about once per video and process, and
reported in the batch under ``"skipped"``/``"skip_errors"``; ``strict=True`` raises instead.
"""
from __future__ import annotations

import inspect
import warnings
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch.utils.data import Dataset, default_collate

from lightning_temporal.checks import check_callable, check_instance, check_int, fail
from lightning_temporal.data.manifest import VideoManifest, VideoRecord
from lightning_temporal.data.transforms import short_side_size, to_float_clip
from lightning_temporal.data.torchcodec_backend import resolve_backend
from lightning_temporal.data.video import VideoError, probe, read_clip

__all__ = ["num_clip_positions", "load_clip", "SkippedClip", "ClipDataset",
           "collate_clips", "SkipCounter", "key_seed"]

DecodeSize = Union[None, int, Tuple[int, int]]


def num_clip_positions(num_frames: torch.Tensor, clip_len: int, stride: int = 1) -> torch.Tensor:
    """int64 [V]: clip positions per video, N = max(1, L - span + 1) with span = (clip_len - 1) * stride + 1."""
    span = (clip_len - 1) * stride + 1
    return (torch.as_tensor(num_frames, dtype=torch.int64) - span + 1).clamp_(min=1)


def _decode_size(record: VideoRecord, size: DecodeSize) -> Optional[Tuple[int, int]]:
    if size is None or isinstance(size, tuple):
        return size
    if record.height is None or record.width is None:
        return None  # frame size unknown (count came from the CSV): decode full size, the transform resizes
    return short_side_size(record.height, record.width, size)


def load_clip(record: VideoRecord, start: int, clip_len: int, stride: int = 1,
              size: DecodeSize = None, backend: str = "pyav") -> torch.Tensor:
    """uint8 ``[clip_len, H, W, 3]``: frames start, start+stride, ... of ``record``'s video.

    ``size``: None (decoded size), ``(h, w)``, or an int short side (aspect kept; needs the record's probed
    height/width, else the full size is decoded). The resize happens in swscale during colour conversion.
    Raises ``VideoError`` when the video cannot be decoded. ``backend``: the decoder, see :func:`read_clip`.
    """
    return read_clip(record.path, start, clip_len, stride, size=_decode_size(record, size), backend=backend)


@dataclass(frozen=True)
class SkippedClip:
    """Placeholder item for a clip whose video failed to decode; :func:`collate_clips` drops it."""

    video_idx: int
    start: int
    error: str
    with_clean: bool = False


def _takes_generator(transform) -> bool:
    """Whether ``transform(frames, generator=g)`` is accepted (TrainTransform / CleanTransform are)."""
    try:
        params = inspect.signature(transform).parameters
    except (TypeError, ValueError):  # builtins without a signature
        return False
    return "generator" in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def key_seed(video_idx: int, start: int) -> int:
    """The augmentation seed of a ``(video_idx, start)`` key given without one (direct indexing): a function of
    the clip position alone, so repeated reads of a clip agree."""
    return (int(video_idx) << 32) ^ int(start) ^ 0x5DEECE66D


def check_decode_size(decode_size: DecodeSize) -> DecodeSize:
    """None, an int short side >= 1 or (height, width) ints >= 1 (a list becomes a tuple), else ``ValueError``."""
    allowed = "None, an int short side >= 1 or (height, width) ints >= 1"
    if isinstance(decode_size, (list, tuple)):
        if len(decode_size) != 2:
            fail("decode_size", allowed, decode_size)
        return tuple(check_int("decode_size", v, minimum=1) for v in decode_size)
    if decode_size is not None:
        check_int("decode_size", decode_size, minimum=1, hint=allowed)
    return decode_size


class ClipDataset(Dataset):
    """Map-style dataset of clips: ``dataset[(video_idx, start)]`` decodes and transforms one clip.

    >>> from lightning_temporal.data.manifest import VideoManifest, VideoRecord
    >>> m = VideoManifest([VideoRecord("a.mp4", 0, num_frames=40)], ["walk"])
    >>> ClipDataset(m, clip_len=16, stride=2).num_positions.tolist()
    [10]

    Keys are ``(video_idx, start, clip_seed)`` as :class:`~lightning_temporal.sampling.ClipSampler` yields them
    (``clip_seed`` seeds the clip's augmentation), or ``(video_idx, start)`` (the seed is then
    :func:`key_seed` of the position). The transform's random draws come from a ``torch.Generator`` seeded by it:
    passed as ``transform(frames, generator=g)`` when the transform takes a ``generator`` argument
    (:class:`~lightning_temporal.data.transforms.TrainTransform` does), else the transform runs with torch's CPU
    RNG forked and seeded (``torch.random.fork_rng``), which leaves the global RNG as it was. (Draws from
    ``random`` or ``numpy.random`` inside a custom transform are not covered.)

    Items are dicts: ``"clip"`` float32 ``[C, T, H, W]`` (``transform`` applied to the uint8 ``[T, H, W, 3]``
    frames; without a transform the frames as float in [0, 1]), ``"clean"`` (the same decoded frames through
    ``clean_transform``, when one is given), ``"label"``, ``"video_idx"``, ``"start"`` (ints). Use
    :func:`collate_clips` as the DataLoader's ``collate_fn``. ``len(dataset)`` is the number of videos.

    ``decode_size``: None, ``(h, w)`` or an int short side, resized by the decoder (cheaper than converting
    full-size frames). ``strict``: raise on a video that fails to decode instead of skipping it. ``backend``:
    ``"pyav"`` (default), ``"torchcodec"`` or ``"auto"``, see :func:`~lightning_temporal.data.video.read_clip`.
    """

    def __init__(self, manifest: VideoManifest, clip_len: int, stride: int = 1,
                 transform: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
                 clean_transform: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
                 strict: bool = False, decode_size: DecodeSize = None, backend: str = "pyav"):
        check_instance("manifest", manifest, VideoManifest, hint="read one with read_csv_manifest")
        check_int("clip_len", clip_len, minimum=1)
        check_int("stride", stride, minimum=1)
        for name, t in (("transform", transform), ("clean_transform", clean_transform)):
            check_callable(name, t, optional=True, hint="taking uint8 [T, H, W, 3]")
        decode_size = check_decode_size(decode_size)
        self.manifest = manifest
        self.clip_len, self.stride = clip_len, stride
        self.transform, self.clean_transform = transform, clean_transform
        self.strict, self.decode_size = bool(strict), decode_size
        self.backend = resolve_backend(backend, "ClipDataset backend")
        self._num_positions = num_clip_positions(manifest.num_frames, clip_len, stride)
        self._transform_takes_generator = transform is not None and _takes_generator(transform)
        self._warned: set = set()  # videos already warned about in this process

    @property
    def num_positions(self) -> torch.Tensor:
        """int64 [V]: number of clip positions N = max(1, L - span + 1) of each video."""
        return self._num_positions

    def __len__(self) -> int:
        return len(self.manifest)

    def _parse_index(self, index) -> Tuple[int, int, int]:
        try:
            key = [int(x) for x in index]
            if len(key) not in (2, 3):
                raise ValueError
        except (TypeError, ValueError):
            raise TypeError(f"ClipDataset is indexed by (video_idx, start[, clip_seed]) tuples, got {index!r}; give "
                            "the DataLoader a ClipSampler (lightning_temporal.sampling) as its sampler") from None
        v, s = key[0], key[1]
        if not 0 <= v < len(self.manifest):
            raise IndexError(f"video_idx {v} out of range: the manifest has {len(self.manifest)} videos")
        n = int(self._num_positions[v])
        if not 0 <= s < n:
            r = self.manifest[v]
            raise IndexError(f"start {s} out of range for video {v} ({r.path}): it has {n} clip positions "
                             f"0..{n - 1} ({r.num_frames} frames, clip_len {self.clip_len}, stride {self.stride})")
        return v, s, (key[2] if len(key) == 3 else key_seed(v, s))

    def _check_inside(self, record: VideoRecord, start: int) -> None:
        """VideoError when the manifest puts the clip inside the video but the file ends before its last frame
        (a count trusted with ``probe=False``, or a file changed since): such a clip would come back padded with
        the file's last frame. One cached index lookup (no decoding)."""
        last = start + (self.clip_len - 1) * self.stride
        if record.num_frames is None or last >= record.num_frames:
            return  # a video shorter than a clip span is padded by design
        n = probe(record.path, exact=False).num_frames
        if start < n <= last:  # (a start past the end: read_clip names that itself)
            raise VideoError(f"{record.path}: the clip at {start} needs frame {last} but the file has {n} frames while "
                             f"the manifest says {record.num_frames}: it would be padded. Fix num_frames (or re-read "
                             "the manifest with probe=True, which checks every count)")

    def _augment(self, frames: torch.Tensor, seed: int) -> torch.Tensor:
        """``transform(frames)`` with every random draw taken from a generator seeded by ``seed``."""
        if self._transform_takes_generator:
            return self.transform(frames, generator=torch.Generator().manual_seed(seed))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.transform(frames)

    def __getitem__(self, index) -> Union[Dict[str, object], SkippedClip]:
        v, s, seed = self._parse_index(index)
        record = self.manifest[v]
        try:
            self._check_inside(record, s)
            frames = load_clip(record, s, self.clip_len, self.stride, self.decode_size, self.backend)
        except (VideoError, ValueError) as err:
            # (v, s) were checked against the manifest above, so a ValueError here means the file holds fewer
            # frames than the manifest says (changed since it was probed, or a wrong num_frames column)
            hint = "" if isinstance(err, VideoError) else (f" (the manifest says {record.num_frames} frames; fix "
                                                           "num_frames or re-read the manifest to re-probe)")
            where = f"video {v} ({record.source})" if record.source else f"video {v}"
            message = f"{where}: {err}{hint}"
            if self.strict:
                raise VideoError(message) from err
            if v not in self._warned:
                self._warned.add(v)
                warnings.warn(f"skipping a clip of {message} (strict=False; later failures of this video are "
                              "counted, not warned)")
            return SkippedClip(v, s, message, self.clean_transform is not None)
        item = {"clip": self._augment(frames, seed) if self.transform is not None
                else to_float_clip(frames).transpose(0, 1),
                "label": record.label, "video_idx": v, "start": s}
        if self.clean_transform is not None:
            item["clean"] = self.clean_transform(frames)
        return item


def collate_clips(items: Sequence[Union[Dict[str, object], SkippedClip]]) -> Dict[str, object]:
    """Batch of :class:`ClipDataset` items: stacked tensors of the decoded items (``"clip"``, ``"clean"`` when
    present, ``"label"``, ``"video_idx"``, ``"start"``) plus
    ``"skipped"`` int64 ``[S]`` (video_idx of the skipped ones) and ``"skip_errors"`` (their messages).

    A batch whose items were all skipped has N = 0 and ``"clip"`` of shape ``[0, 0, 0, 0, 0]``.
    """
    ok = [it for it in items if not isinstance(it, SkippedClip)]
    bad = [it for it in items if isinstance(it, SkippedClip)]
    empty = torch.zeros(0, 0, 0, 0, 0)
    batch: Dict[str, object] = {
        "clip": _stack([it["clip"] for it in ok]) if ok else empty,
        "label": torch.tensor([it["label"] for it in ok], dtype=torch.int64),
        "video_idx": torch.tensor([it["video_idx"] for it in ok], dtype=torch.int64),
        "start": torch.tensor([it["start"] for it in ok], dtype=torch.int64),
        "skipped": torch.tensor([it.video_idx for it in bad], dtype=torch.int64),
        "skip_errors": [it.error for it in bad],
    }
    if (ok and "clean" in ok[0]) or (not ok and bad and bad[0].with_clean):
        batch["clean"] = _stack([it["clean"] for it in ok]) if ok else empty
    return batch


def _stack(clips: List[torch.Tensor]) -> torch.Tensor:
    """``torch.stack(clips)``; inside a DataLoader worker written straight into shared memory (torch's
    ``default_collate`` does the same), so handing the batch to the main process does not copy it once more
    (a 224² clip of 32 frames is 19 MB of float32: ``benchmarks/dataloader.py`` measures the saving)."""
    return default_collate(clips)


class SkipCounter:
    """Counts clips skipped because their video failed to decode, and batches left with no clip; pure and picklable.

    >>> c = SkipCounter()
    >>> c.update({"clip": torch.zeros(0, 0, 0, 0, 0), "skipped": torch.tensor([4]),
    ...           "skip_errors": ["video 4 (a.csv, row 6): cannot decode"]})
    1
    >>> c.epoch_skipped, c.total_skipped, c.videos(), c.empty_batches
    (1, 1, [4], 1)

    Call :meth:`update` with each batch, :meth:`summary` at the end of an epoch (one line, empty when
    nothing was skipped) and :meth:`reset` at the start of the next. Under DDP each rank counts its own
    batches. ``total_skipped`` and ``total_empty_batches`` survive :meth:`reset`; everything survives a
    checkpoint through :meth:`state_dict` / :meth:`load_state_dict` (``VideoClassifier`` saves its counter
    in every checkpoint).
    """

    def __init__(self):
        self.counts: Dict[int, int] = {}  # this epoch: video_idx -> skipped clips
        self.errors: Dict[int, str] = {}  # this epoch: video_idx -> last error message
        self.total_skipped = 0
        self.empty_batches = 0  # this epoch: batches in which every clip was skipped (nothing trained)
        self.total_empty_batches = 0

    def update(self, batch: Dict[str, object]) -> int:
        """Record the skips of one collated batch; returns how many it held. A batch whose ``"clip"`` holds no
        clip counts as an empty batch."""
        videos: List[int] = batch["skipped"].tolist()
        for v, e in zip(videos, batch["skip_errors"]):
            self.counts[v] = self.counts.get(v, 0) + 1
            self.errors[v] = e
        self.total_skipped += len(videos)
        clip = batch.get("clip")
        if torch.is_tensor(clip) and clip.shape[0] == 0:
            self.empty_batches += 1
            self.total_empty_batches += 1
        return len(videos)

    @property
    def epoch_skipped(self) -> int:
        return sum(self.counts.values())

    def videos(self) -> List[int]:
        """Sorted video indices with a skipped clip this epoch."""
        return sorted(self.counts)

    def summary(self, epoch: Optional[int] = None, max_listed: int = 5) -> str:
        if not self.counts and not self.empty_batches:
            return ""
        head = f"epoch {epoch}: " if epoch is not None else ""
        listed = "; ".join(self.errors[v] for v in self.videos()[:max_listed])
        more = f" (+{len(self.counts) - max_listed} more videos)" if len(self.counts) > max_listed else ""
        empty = (f"; {self.empty_batches} batch(es) had no clip left and trained nothing"
                 if self.empty_batches else "")
        return (f"{head}skipped {self.epoch_skipped} clip(s) of {len(self.counts)} video(s) that failed to "
                f"decode: {listed}{more}{empty}")

    def reset(self) -> None:
        """Start a new epoch (keeps ``total_skipped`` and ``total_empty_batches``)."""
        self.counts, self.errors, self.empty_batches = {}, {}, 0

    def state_dict(self) -> Dict[str, object]:
        return {"counts": dict(self.counts), "errors": dict(self.errors), "total_skipped": self.total_skipped,
                "empty_batches": self.empty_batches, "total_empty_batches": self.total_empty_batches}

    def load_state_dict(self, state: Dict[str, object]) -> None:
        self.counts = {int(k): int(v) for k, v in state["counts"].items()}
        self.errors = {int(k): str(v) for k, v in state["errors"].items()}
        self.total_skipped = int(state["total_skipped"])
        self.empty_batches = int(state.get("empty_batches", 0))
        self.total_empty_batches = int(state.get("total_empty_batches", 0))
