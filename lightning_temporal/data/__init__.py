"""Video I/O and datasets: frame-exact decoding, manifests, clip transforms, clip and whole-video datasets."""
from lightning_temporal.data.video import VideoError, VideoInfo, VideoReader, probe, read_clip
from lightning_temporal.data.manifest import (
    ManifestError,
    VideoManifest,
    VideoRecord,
    read_csv_manifest,
    read_hmdb51_split,
    read_kinetics_csv,
    read_ucf101_split,
)
from lightning_temporal.data.transforms import CleanTransform, TrainTransform
from lightning_temporal.data.dataset import ClipDataset, SkipCounter, collate_clips, num_clip_positions
from lightning_temporal.data.video_dataset import VideoDataset, collate_videos

__all__ = [
    "VideoError", "VideoInfo", "VideoReader", "probe", "read_clip",
    "ManifestError", "VideoManifest", "VideoRecord", "read_csv_manifest", "read_hmdb51_split",
    "read_kinetics_csv", "read_ucf101_split",
    "CleanTransform", "TrainTransform",
    "ClipDataset", "SkipCounter", "collate_clips", "num_clip_positions",
    "VideoDataset", "collate_videos",
]
