"""``TemporalDataModule``: clip-sampled training, whole-video validation / test / predict."""
from __future__ import annotations

import os
import warnings
from typing import Any, Dict, List, Optional, Sequence, Union

import torch
from lightning.pytorch import LightningDataModule
from lightning.pytorch.utilities import rank_zero_warn
from torch.utils.data import DataLoader, DistributedSampler

from lightning_temporal.checks import check_choice, check_int, fail
from lightning_temporal.data.dataset import ClipDataset, collate_clips
from lightning_temporal.data.manifest import (
    MANIFEST_FORMATS,
    UnknownLabelError,
    VideoManifest,
    read_class_folders,
    read_csv_manifest,
    read_hmdb51_split,
    read_kinetics_csv,
    read_rawframe_list,
    read_ucf101_split,
    read_video_list,
)
from lightning_temporal.data.frames import check_frame_pattern
from lightning_temporal.data.transforms import KINETICS_MEAN, KINETICS_STD, CleanTransform, TrainTransform
from lightning_temporal.data.video_dataset import EVAL_MODES, VideoDataset, collate_videos
from lightning_temporal.sampling.sampler import ClipLoader, ClipSampler

__all__ = ["TemporalDataModule"]

_SPLITS = ("train", "val", "test", "predict")
_FOLDER_FORMATS = ("ucf101", "hmdb51", "folders")  # the *_manifest keys name folders
_KINETICS_SPLIT = {"train": "train", "val": "val", "test": "test", "predict": "test"}


class _EvalShardSampler(DistributedSampler):
    """Rank r evaluates videos r, r + R, ... without the padding duplicates of ``DistributedSampler``, so
    every video counts once in the (synced) metrics. A ``DistributedSampler`` so Lightning keeps it."""

    def __init__(self, num_videos: int, num_replicas: int = 1, rank: int = 0):
        self.num_videos, self.num_replicas, self.rank = num_videos, num_replicas, rank
        self.epoch, self.shuffle, self.drop_last, self.seed = 0, False, False, 0

    def __iter__(self):
        return iter(range(self.rank, self.num_videos, self.num_replicas))

    def __len__(self) -> int:
        return len(range(self.rank, self.num_videos, self.num_replicas))


class TemporalDataModule(LightningDataModule):
    """Videos from CSV manifests (or the embedded synthetic dataset) for clip training and video evaluation.

    >>> dm = TemporalDataModule(synthetic={"root": "data_cache/quickstart"}, clip_len=16,  # doctest: +SKIP
    ...                         crop_size=56, short_side=64, batch_size=8)
    >>> trainer.fit(model, datamodule=dm)                                                   # doctest: +SKIP

    Training: one clip per video per epoch, chosen by :attr:`clip_sampler` (a
    :class:`~lightning_temporal.sampling.ClipSampler`; uniform unless a ``StochasticSoftmaxCallback``
    installs its policy). Each item carries the augmented clip and, with ``clean_clips=True``, the clean
    (resize + centre crop) copy the callback scores. Under DDP the sampler shards one global plan itself: it
    is a ``DistributedSampler``, so Lightning keeps it and no Trainer flag needs changing.

    Validation / test / predict: whole videos (``eval_mode="clips"``: every ``eval_clip_stride``-th clip
    position, default ``clip_len // 4``; ``"dense"``: all frames in one pass), ``eval_batch_size`` videos a
    batch; the model pools the clip scores over time.

    Args:
        train_manifest, val_manifest, test_manifest, predict_manifest: CSV manifests
            (``path,label[,num_frames][,event_start][,event_end][,frame_scores]``). ``predict_manifest``
            defaults to the test manifest.
        synthetic: generate (first use) or reuse the embedded synthetic dataset of localized events: a dict of
            ``lightning_temporal.data.synthetic.ensure_dataset`` arguments with ``root``; its splits fill the
            manifests not given.
        manifest_format: ``csv`` (this package's manifest), ``ucf101`` / ``hmdb51`` (the ``*_manifest`` keys
            name the folder of the official split files, ``split`` picks 1-3; train = the split's training
            list, val/test = its test list), ``kinetics`` (the ``*_manifest`` keys name the annotation CSVs;
            a CSV with a ``split`` column gives each split its own rows: train, val / validate, test, and
            predict reads test; needs ``data_root``), ``folders`` (the ``*_manifest`` keys name class-folder
            roots ``root/<class>/<video>``, classes sorted), ``video_list`` (space-separated ``path label``
            lines: PyTorchVideo ``from_csv``, MMAction2 ``VideoDataset``) or ``rawframe_list`` (MMAction2
            ``frame_dir total_frames label``). See ``lightning_temporal.data.manifest.read_manifest``.
        manifest_encoding: text encoding of the manifest and class files (default UTF-8), e.g. ``latin-1``.
        data_root: folder the videos are under (CSV and lists: default the list's folder); a mapping split ->
            folder gives each split its own (e.g. Kinetics ``{train: .../train, val: .../val}``).
        classes: class names (list or file, one per line); default the sorted names of the training manifest
            (val/test/predict labels must then be among them).
        on_bad_video: ``raise`` (default) stops at a manifest row whose video is missing or undecodable while
            probing; ``skip`` leaves such rows out with a warning (listed in ``manifest.dropped``).
        allow_repeats: a video listed twice in a manifest is an error naming both rows unless this is true
            (deliberate oversampling); a video under two labels is always an error.
        clip_len, stride: frames per clip and temporal stride. crop_size, short_side: spatial size.
        batch_size: training clips per batch (per process). num_workers: DataLoader workers.
        strict: raise on a video that fails to decode instead of skipping (and counting) it.
        seed: seeds the sampler's per-epoch plans (identical on every rank) and every clip's augmentation (crop
            position, flip), drawn from a generator seeded by (seed, epoch, video, plan position), never from the
            global RNG: the same clip gets the same augmentation with any number of workers or ranks.
        frame_pattern: file names of the frame images of CSV rows that are frame folders, e.g.
            ``"img_{:05d}.jpg"`` (default: the one naming pattern each folder holds; see
            ``lightning_temporal.data.frames``).

    Resuming. The train loader is a :class:`~lightning_temporal.sampling.ClipLoader`: every checkpoint of
    ``fit`` holds its epoch and position in the plan, so a run resumed from a checkpoint written in the middle
    of an epoch trains exactly the rest of that epoch's clips.
    """

    def __init__(
        self,
        train_manifest: Optional[str] = None,
        val_manifest: Optional[str] = None,
        test_manifest: Optional[str] = None,
        predict_manifest: Optional[str] = None,
        synthetic: Optional[Dict[str, Any]] = None,
        manifest_format: str = "csv",
        manifest_encoding: Optional[str] = None,
        split: int = 1,
        classes: Optional[Union[str, List[str]]] = None,
        data_root: Optional[Union[str, Dict[str, str]]] = None,
        on_bad_video: str = "raise",
        allow_repeats: bool = False,
        clip_len: int = 16,
        stride: int = 1,
        crop_size: int = 112,
        short_side: int = 128,
        flip: bool = True,
        mean: Sequence[float] = KINETICS_MEAN,
        std: Sequence[float] = KINETICS_STD,
        batch_size: int = 8,
        eval_batch_size: int = 1,
        num_workers: int = 0,
        eval_mode: str = "clips",
        eval_clip_stride: Optional[int] = None,
        clean_clips: bool = True,
        strict: bool = False,
        seed: int = 0,
        progress: Optional[bool] = None,
        frame_pattern: Optional[str] = None,
    ):
        super().__init__()
        self.save_hyperparameters()
        self._check_arguments()
        try:
            self.train_transform = TrainTransform(crop_size, short_side, flip=flip, mean=mean, std=std)
            self.clean_transform = CleanTransform(crop_size, short_side, mean=mean, std=std)
        except ValueError as err:
            raise ValueError(f"data: {err}") from None
        self.manifests: Dict[str, VideoManifest] = {}
        self.datasets: Dict[str, Any] = {}
        self._clip_sampler: Optional[ClipSampler] = None

    def _check_arguments(self) -> None:
        """Check the constructor's arguments (named ``data.<name>``, as a LightningCLI config names them)."""
        hp = self.hparams
        for name in ("clip_len", "stride", "batch_size", "eval_batch_size"):
            check_int(f"data.{name}", hp[name], minimum=1)
        check_int("data.num_workers", hp.num_workers, minimum=0)
        check_choice("data.manifest_format", hp.manifest_format, MANIFEST_FORMATS)
        check_choice("data.on_bad_video", hp.on_bad_video, ("raise", "skip"))
        check_choice("data.eval_mode", hp.eval_mode, EVAL_MODES)
        if hp.eval_clip_stride is not None:
            check_int("data.eval_clip_stride", hp.eval_clip_stride, minimum=1)
        folder = hp.manifest_format in _FOLDER_FORMATS
        if hp.manifest_format in ("ucf101", "hmdb51", "kinetics") and hp.data_root is None:
            layout = "<label>/<youtube_id>_<start>_<end>.mp4" if hp.manifest_format == "kinetics" \
                else "<class>/<video>.avi"
            raise ValueError(f"data.data_root is not set; manifest_format={hp.manifest_format!r} needs the folder "
                             f"that holds the videos ({layout})")
        if hp.manifest_encoding is not None:
            import codecs

            try:
                codecs.lookup(hp.manifest_encoding)
            except (LookupError, TypeError):
                fail("data.manifest_encoding", "a text encoding Python knows", hp.manifest_encoding,
                     hint="e.g. utf-8, latin-1, cp1252")
        if hp.synthetic is None and all(hp[f"{split}_manifest"] is None for split in _SPLITS):
            raise ValueError("data: no data given; set data.train_manifest (and val/test manifests) to CSV files, "
                             "or data.synthetic: {root: <folder>} for the embedded synthetic dataset")
        if hp.synthetic is not None and (not isinstance(hp.synthetic, dict) or "root" not in hp.synthetic):
            fail("data.synthetic", "a mapping with at least 'root'", hp.synthetic,
                 hint="the folder for the generated videos, and optional generator arguments")
        for split in _SPLITS:
            path = hp[f"{split}_manifest"]
            if path is not None and not (os.path.isdir(path) if folder else os.path.isfile(path)):
                what = {"folders": "the class-folder root (root/<class>/<video>)"}.get(
                    hp.manifest_format, "the folder of the official split files" if folder else "a manifest file")
                raise FileNotFoundError(f"data.{split}_manifest={path!r}: not found; give {what} "
                                        f"(manifest_format={hp.manifest_format!r}) or leave it unset")
        if hp.frame_pattern is not None:
            if hp.manifest_format not in ("csv", "rawframe_list"):
                raise ValueError(f"data.frame_pattern is set but manifest_format={hp.manifest_format!r} lists video "
                                 "files; frame folders are read from CSV manifests and rawframe lists "
                                 "(manifest_format: csv or rawframe_list)")
            try:
                check_frame_pattern(hp.frame_pattern)
            except ValueError as err:
                raise ValueError(f"data.{err}") from None
        if hp.synthetic is not None and hp.flip and hp.synthetic.get("variant", "multiclass") != "binary":
            warnings.warn("data.flip is true with the synthetic dataset, whose classes are motion directions: a "
                          "horizontal flip turns a 'left' video into a 'right' one; set data.flip: false")

    # ------------------------------------------------------------------------------------------------ data
    def _manifest_paths(self) -> Dict[str, Optional[str]]:
        paths = {s: getattr(self.hparams, f"{s}_manifest") for s in _SPLITS}
        if self.hparams.synthetic is not None:
            generated = self._ensure_synthetic()
            for split in ("train", "val", "test"):
                paths[split] = paths[split] or generated[split]
        paths["predict"] = paths["predict"] or paths["test"]
        return paths

    def _ensure_synthetic(self) -> Dict[str, str]:
        from lightning_temporal.data.synthetic import ensure_dataset

        kwargs = dict(self.hparams.synthetic)
        root = kwargs.pop("root")
        progress = True if self.hparams.progress is None else self.hparams.progress
        return ensure_dataset(root, progress=progress, **kwargs)

    def prepare_data(self) -> None:
        # local rank 0 only: generate the synthetic videos once, before the other ranks read them
        if self.hparams.synthetic is not None:
            self._ensure_synthetic()

    def manifest(self, split: str) -> VideoManifest:
        """The :class:`VideoManifest` of ``split`` (``train``/``val``/``test``/``predict``), read once."""
        if split not in self.manifests:
            path = self._manifest_paths()[split]
            if path is None:
                raise ValueError(f"data.{split}_manifest is not set; give a CSV manifest for the {split} split")
            classes = self.hparams.classes
            if classes is None and split != "train" and self._manifest_paths()["train"] is not None:
                classes = self.manifest("train").class_names  # one class list across splits
            try:
                self.manifests[split] = self._read_manifest(split, path, classes)
            except UnknownLabelError as err:
                if classes is None or self.hparams.classes is not None or split == "train":
                    raise
                raise UnknownLabelError(f"{err} (the {split} split's class list is the training manifest's: "
                                        f"{self._manifest_paths()['train']}; give data.classes the full class list "
                                        f"when the {split} split has classes that training lacks)") from None
        return self.manifests[split]

    def _read_manifest(self, split: str, path: str, classes) -> VideoManifest:
        hp = self.hparams
        root = hp.data_root.get(split, hp.data_root.get("train")) if isinstance(hp.data_root, dict) \
            else hp.data_root
        common = dict(progress=hp.progress, on_bad_video=hp.on_bad_video, allow_repeats=hp.allow_repeats,
                      encoding=hp.manifest_encoding)
        if hp.manifest_format == "csv":
            return read_csv_manifest(path, classes=classes, root=root, frame_pattern=hp.frame_pattern, **common)
        if hp.manifest_format == "video_list":
            return read_video_list(path, root=root, classes=classes, **common)
        if hp.manifest_format == "rawframe_list":
            return read_rawframe_list(path, root=root, classes=classes, frame_pattern=hp.frame_pattern, **common)
        if hp.manifest_format == "folders":
            return read_class_folders(path, classes=classes, **common)
        if hp.manifest_format == "kinetics":
            return read_kinetics_csv(path, root, classes=classes, split=_KINETICS_SPLIT[split], **common)
        reader = read_ucf101_split if hp.manifest_format == "ucf101" else read_hmdb51_split
        return reader(root, path, split=hp.split, train=split == "train", **common)

    @property
    def num_classes(self) -> int:
        split = next(s for s in _SPLITS if self._manifest_paths()[s] is not None)
        return self.manifest(split).num_classes

    @property
    def class_names(self) -> List[str]:
        split = next(s for s in _SPLITS if self._manifest_paths()[s] is not None)
        return self.manifest(split).class_names

    @property
    def clip_len(self) -> int:
        return self.hparams.clip_len

    @property
    def stride(self) -> int:
        return self.hparams.stride

    @property
    def train_manifest(self) -> VideoManifest:
        """Per-video metadata of the training set (frame counts, event windows, frame-score files)."""
        return self.manifest("train")

    @property
    def clip_sampler(self) -> ClipSampler:
        """The training :class:`ClipSampler` (built by ``setup("fit")``)."""
        if self._clip_sampler is None:
            self.setup("fit")
        return self._clip_sampler

    def _video_dataset(self, split: str) -> VideoDataset:
        return VideoDataset(self.manifest(split), self.hparams.clip_len, self.hparams.stride, self.clean_transform,
                            mode=self.hparams.eval_mode, clip_stride=self.hparams.eval_clip_stride,
                            strict=self.hparams.strict, decode_size=self.hparams.short_side)

    def _warn_short_videos(self, split: str) -> None:
        """Once per split: say how many videos are shorter than one clip span and how they are padded."""
        hp = self.hparams
        span = (hp.clip_len - 1) * hp.stride + 1
        frames = torch.as_tensor(self.manifest(split).num_frames, dtype=torch.int64)
        short = frames < span
        n = int(short.sum())
        if n:
            rank_zero_warn(
                f"{n} of {frames.numel()} {split} videos are shorter than one clip (data.clip_len={hp.clip_len}, "
                f"stride={hp.stride}: {span} frames; the shortest has {int(frames.min())}): their clips repeat the "
                "last frame up to the clip length, and each such video has a single clip position. Lower "
                "data.clip_len to train on real frames only")

    def setup(self, stage: Optional[str] = None) -> None:
        hp = self.hparams
        paths = self._manifest_paths()
        if stage in (None, "fit") and "train" not in self.datasets:
            if paths["train"] is None:
                raise ValueError("data.train_manifest is not set; fitting needs a training manifest")
            self.datasets["train"] = ClipDataset(
                self.manifest("train"), hp.clip_len, hp.stride, transform=self.train_transform,
                clean_transform=self.clean_transform if hp.clean_clips else None, strict=hp.strict,
                decode_size=hp.short_side)
            self._clip_sampler = ClipSampler(self.datasets["train"].num_positions, shuffle=True, seed=hp.seed)
            self._warn_short_videos("train")
        for split, stages in (("val", ("fit", "validate")), ("test", ("test",)), ("predict", ("predict",))):
            if (stage is None or stage in stages) and paths[split] is not None and split not in self.datasets:
                self.datasets[split] = self._video_dataset(split)
                self._warn_short_videos(split)

    # ------------------------------------------------------------------------------------------ loaders
    def _loader(self, dataset, batch_size: int, collate, sampler=None, cls=DataLoader) -> DataLoader:
        workers = self.hparams.num_workers
        return cls(dataset, batch_size=batch_size, sampler=sampler, shuffle=False, collate_fn=collate,
                   num_workers=workers, persistent_workers=workers > 0,
                   pin_memory=bool(self.trainer is not None and self.trainer.accelerator.__class__.__name__ == "CUDAAccelerator"))

    def train_dataloader(self) -> DataLoader:
        sampler = self.clip_sampler
        if self.trainer is not None:  # shard the global plan; the sampler stays ours under DDP
            sampler.num_replicas, sampler.rank = self.trainer.world_size, self.trainer.global_rank
        return self._loader(self.datasets["train"], self.hparams.batch_size, collate_clips, sampler, ClipLoader)

    def _eval_loader(self, split: str) -> DataLoader:
        self.setup({"val": "validate", "test": "test", "predict": "predict"}[split])
        if split not in self.datasets:
            raise ValueError(f"data.{split}_manifest is not set; give a CSV manifest for the {split} split")
        dataset = self.datasets[split]
        sampler = None
        if self.trainer is not None and self.trainer.world_size > 1:
            sampler = _EvalShardSampler(len(dataset), self.trainer.world_size, self.trainer.global_rank)
        return self._loader(dataset, self.hparams.eval_batch_size, collate_videos, sampler)

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._eval_loader("predict")
