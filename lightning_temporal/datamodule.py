"""``TemporalDataModule``: clip-sampled training, whole-video validation / test / predict."""
from __future__ import annotations

import os
import warnings
from typing import Any, Dict, List, Optional, Sequence, Union

import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, DistributedSampler

from lightning_temporal.data.dataset import ClipDataset, collate_clips
from lightning_temporal.data.manifest import (
    UnknownLabelError,
    VideoManifest,
    read_csv_manifest,
    read_hmdb51_split,
    read_kinetics_csv,
    read_ucf101_split,
)
from lightning_temporal.data.transforms import KINETICS_MEAN, KINETICS_STD, CleanTransform, TrainTransform
from lightning_temporal.data.video_dataset import EVAL_MODES, VideoDataset, collate_videos
from lightning_temporal.sampling.sampler import ClipLoader, ClipSampler

__all__ = ["TemporalDataModule"]

_SPLITS = ("train", "val", "test", "predict")
MANIFEST_FORMATS = ("csv", "ucf101", "hmdb51", "kinetics")


def _positive_int(name: str, value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"data.{name}={value!r}; a positive integer is allowed")
    return value


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
        synthetic: generate (first use) or reuse the embedded synthetic dataset (SPEC §3): a dict of
            ``lightning_temporal.data.synthetic.ensure_dataset`` arguments with ``root``; its splits fill the
            manifests not given.
        manifest_format: ``csv`` (this package's manifest), ``ucf101`` / ``hmdb51`` (the ``*_manifest`` keys
            name the folder of the official split files, ``split`` picks 1-3; train = the split's training
            list, val/test = its test list) or ``kinetics`` (the ``*_manifest`` keys name the annotation CSVs).
        data_root: folder the videos are under (CSV: default the CSV's folder); a mapping split -> folder
            gives each split its own (e.g. Kinetics ``{train: .../train, val: .../val}``).
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
    ):
        super().__init__()
        self.save_hyperparameters()
        for name in ("clip_len", "stride", "batch_size", "eval_batch_size"):
            _positive_int(name, getattr(self.hparams, name))
        if not isinstance(num_workers, int) or num_workers < 0:
            raise ValueError(f"data.num_workers={num_workers!r}; an integer >= 0 is allowed")
        if manifest_format not in MANIFEST_FORMATS:
            raise ValueError(f"data.manifest_format={manifest_format!r}; one of {MANIFEST_FORMATS} is allowed")
        if on_bad_video not in ("raise", "skip"):
            raise ValueError(f"data.on_bad_video={on_bad_video!r}; 'raise' or 'skip' is allowed")
        if manifest_format in ("ucf101", "hmdb51") and data_root is None:
            raise ValueError(f"data.data_root is not set; manifest_format={manifest_format!r} needs the folder "
                             "that holds the videos (<class>/<video>.avi)")
        if eval_mode not in EVAL_MODES:
            raise ValueError(f"data.eval_mode={eval_mode!r}; one of {EVAL_MODES} is allowed")
        if eval_clip_stride is not None:
            _positive_int("eval_clip_stride", eval_clip_stride)
        if synthetic is None and train_manifest is None and val_manifest is None and test_manifest is None \
                and predict_manifest is None:
            raise ValueError("data: no data given; set data.train_manifest (and val/test manifests) to CSV files, "
                             "or data.synthetic: {root: <folder>} for the embedded synthetic dataset")
        if synthetic is not None and (not isinstance(synthetic, dict) or "root" not in synthetic):
            raise ValueError(f"data.synthetic={synthetic!r}; a mapping with at least 'root' (the folder for the "
                             "generated videos) and optional generator arguments is allowed")
        for split in _SPLITS:
            path = getattr(self.hparams, f"{split}_manifest")
            folder = manifest_format in ("ucf101", "hmdb51")
            if path is not None and not (os.path.isdir(path) if folder else os.path.isfile(path)):
                what = "the folder of the official split files" if folder else "a manifest file"
                raise FileNotFoundError(f"data.{split}_manifest={path!r}: not found; give {what} "
                                        f"(manifest_format={manifest_format!r}) or leave it unset")
        if synthetic is not None and flip and synthetic.get("variant", "multiclass") != "binary":
            warnings.warn("data.flip is true with the synthetic dataset, whose classes are motion directions: a "
                          "horizontal flip turns a 'left' video into a 'right' one; set data.flip: false")
        try:
            self.train_transform = TrainTransform(crop_size, short_side, flip=flip, mean=mean, std=std)
            self.clean_transform = CleanTransform(crop_size, short_side, mean=mean, std=std)
        except ValueError as err:
            raise ValueError(f"data: {err}") from None
        self.manifests: Dict[str, VideoManifest] = {}
        self.datasets: Dict[str, Any] = {}
        self._clip_sampler: Optional[ClipSampler] = None

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
        common = dict(progress=hp.progress, on_bad_video=hp.on_bad_video, allow_repeats=hp.allow_repeats)
        if hp.manifest_format == "csv":
            return read_csv_manifest(path, classes=classes, root=root, **common)
        if hp.manifest_format == "kinetics":
            return read_kinetics_csv(path, root, classes=classes, **common)
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
        for split, stages in (("val", ("fit", "validate")), ("test", ("test",)), ("predict", ("predict",))):
            if (stage is None or stage in stages) and paths[split] is not None and split not in self.datasets:
                self.datasets[split] = self._video_dataset(split)

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
