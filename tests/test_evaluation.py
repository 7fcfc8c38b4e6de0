"""Whole-video evaluation: one decode per video into a reused buffer, clips as views, dense clip scores from one
pass, every gamma_p from one forward pass. Independent references: each clip decoded and scored alone, the
pooling formula written out, sequential decodes."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from lightning import Trainer
from torch import nn
from torch.utils.data import DataLoader

from lightning_temporal import TemporalDataModule, VideoClassifier
from lightning_temporal.data.manifest import VideoManifest, VideoRecord
from lightning_temporal.data.transforms import CleanTransform
from lightning_temporal.data.video import VideoReader, read_clip
from lightning_temporal.data.video_dataset import VideoDataset, clip_views, collate_videos, gather_clips
from lightning_temporal.models.backbone import StagedBackbone
from lightning_temporal.models.head import ClassifierHead
from tests.videos import reference_frames, write_video


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """Four H.264 videos of 32x48 (h x w): 30, 21 and 5 frames (shorter than a clip), and 26."""
    root = tmp_path_factory.mktemp("eval_videos")
    lengths = [30, 21, 5, 26]
    paths = [write_video(str(root / f"v{i}.mp4"), num_frames=n, size=(32, 48), gop=8) for i, n in enumerate(lengths)]
    csv = root / "val.csv"
    csv.write_text("path,label,num_frames\n" + "".join(f"v{i}.mp4,c{i % 2},{n}\n" for i, n in enumerate(lengths)))
    return {"paths": paths, "lengths": lengths, "csv": str(csv)}


def _manifest(videos, sized: bool = False) -> VideoManifest:
    records = [VideoRecord(p, i % 2, num_frames=n, height=32 if sized else None, width=48 if sized else None)
               for i, (p, n) in enumerate(zip(videos["paths"], videos["lengths"]))]
    return VideoManifest(records, ["c0", "c1"])


class FrameNet(StagedBackbone):
    """Temporal kernel 1 everywhere: a clip's features are those of its frames, so the dense pass must give
    exactly the clip-wise scores (no receptive field across clip borders)."""

    def __init__(self, temporal_stride: int = 1, pool: str = "max", num_classes: int = 3):
        super().__init__()
        self.stages = nn.ModuleDict({
            "stem": nn.Sequential(nn.Conv3d(3, 6, (1, 3, 3), padding=(0, 1, 1)), nn.ReLU()),
            "res2": nn.Conv3d(6, 6, 1, stride=(temporal_stride, 1, 1))})
        self.stage_out = {"stem": 6, "res2": 6}
        self.head = ClassifierHead(6, num_classes, temporal_pool=pool, spatial_pool="avg")


@pytest.mark.parametrize("temporal_stride,stride,pool", [(1, 1, "max"), (1, 2, "max"), (1, 3, "avg"),
                                                         (2, 1, "max"), (2, 2, "avg")])
def test_dense_scores_equal_each_clip_scored_alone(temporal_stride, stride, pool):
    torch.manual_seed(0)
    model = VideoClassifier(FrameNet(temporal_stride, pool), num_classes=3).eval()
    clip_len = 4
    span = (clip_len - 1) * stride + 1
    lengths = torch.tensor([23, 17, span])
    video = torch.randn(3, 3, 23, 8, 8)
    for v, n in enumerate(lengths.tolist()):  # padded like collate_videos: the last frame repeats
        video[v, :, n:] = video[v, :, n - 1:n]
    with torch.no_grad():
        scores, mask, starts = model.dense_scores(video, lengths, clip_len, stride)
        for v, n in enumerate(lengths.tolist()):
            t = starts[v][mask[v]]
            assert torch.all(t[1:] > t[:-1]) and int(t[0]) == 0
            # every clip start of the video is scored (every temporal_stride-th of each phase)
            expected = [s for s in range(n - span + 1) if (s // stride) % temporal_stride == 0]
            assert t.tolist() == expected
            alone = model.backbone(gather_clips(video, torch.full_like(t, v), t, clip_len, stride))
            torch.testing.assert_close(scores[v][mask[v]], alone, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("pool", ["max", "avg"])
def test_head_forward_dense_window_pools_like_the_head_on_each_window(pool):
    head = ClassifierHead(5, 4, temporal_pool=pool, spatial_pool="max")
    feat = torch.randn(2, 5, 9, 3, 3)
    dense = head.forward_dense(feat, 4)
    assert dense.shape == (2, 6, 4)
    for j in range(6):
        torch.testing.assert_close(dense[:, j], head(feat[:, :, j:j + 4]))
    torch.testing.assert_close(head.forward_dense(feat, 1), head.forward_dense(feat))
    with pytest.raises(ValueError, match="window=10"):
        head.forward_dense(feat, 10)


class CountingLinear(nn.Module):
    """Mean colour per channel and frame, then a fixed linear map; counts its forward calls."""

    def __init__(self, clip_len: int = 8, num_classes: int = 2):
        super().__init__()
        self.fc = nn.Linear(3 * clip_len, num_classes)
        self.calls = 0

    def forward(self, x):  # N, 3, T, H, W
        self.calls += 1
        return self.fc(x.mean(dim=(3, 4)).flatten(1))


def test_every_gamma_and_metric_reuse_one_forward_pass(videos, tmp_path):
    torch.manual_seed(0)
    backbone = CountingLinear()
    model = VideoClassifier(backbone, num_classes=2, gamma_p=1.0, report_gamma_p=(0.0, 1e6), eval_chunk=3)
    dm = TemporalDataModule(val_manifest=videos["csv"], clip_len=8, crop_size=24, short_side=32,
                            mean=(0.5,) * 3, std=(0.25,) * 3, eval_batch_size=2, eval_clip_stride=3, progress=False)
    trainer = Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(tmp_path))
    out = trainer.validate(model, datamodule=dm, verbose=False)[0]
    ds = dm.datasets["val"]
    counts = [len(ds.clip_starts(i)) for i in range(len(ds))]
    batches = [counts[0:2], counts[2:4]]
    assert backbone.calls == sum(-(-sum(b) // 3) for b in batches)  # one pass per chunk, none per gamma
    # independent: each clip decoded and scored alone, pooled with the formula written out
    clean = CleanTransform(24, 32, mean=(0.5,) * 3, std=(0.25,) * 3)
    for gamma, key in ((1.0, "val/top1"), (0.0, "val/gp0/top1"), (1e6, "val/gp1e06/top1")):
        correct = []
        for i in range(len(ds)):
            record = ds.manifest[i]
            with torch.no_grad():
                s = torch.stack([backbone.fc(clean(read_clip(record.path, t, 8))[None].mean(dim=(3, 4)).flatten(1))[0]
                                 for t in ds.clip_starts(i).tolist()]).double()  # T, K
            w = torch.softmax(gamma * s, dim=0) if gamma < 1e5 else (s == s.max(0).values).double()
            correct.append(int((w * s).sum(0).argmax()) == record.label)
        assert out[key] == pytest.approx(float(np.mean(correct))), key


def test_read_all_into_a_reused_buffer_equals_a_fresh_decode(videos):
    path = videos["paths"][0]
    with VideoReader(path) as reader:
        fresh = reader.read_all(size=(16, 24))
    assert fresh.shape == (30, 16, 24, 3)
    for rows in (40, 30, 7, 0):  # room to spare, exact, too small, empty
        buf = torch.zeros((rows, 16, 24, 3), dtype=torch.uint8)
        with VideoReader(path) as reader:
            got = reader.read_all(size=(16, 24), out=buf)
        assert torch.equal(got, fresh), rows
        if rows >= 30:
            assert got.data_ptr() == buf.data_ptr()  # decoded in place, no copy
    with VideoReader(path) as reader:  # a buffer of another frame size is not used, the result is still right
        assert torch.equal(reader.read_all(size=(16, 24), out=torch.zeros((40, 8, 8, 3), dtype=torch.uint8)), fresh)
    with pytest.raises(ValueError, match="v0.mp4: out must be"):
        VideoReader(path).read_all(out=torch.zeros((40, 32, 48, 3)))


def test_video_dataset_reuses_its_buffer_and_items_stay_intact(videos):
    # a transform returning a view of the decoded frames: the reused buffer must not leak into the items
    ds = VideoDataset(_manifest(videos, sized=True), clip_len=8, transform=lambda f: f.permute(3, 0, 1, 2))
    first = ds[0]["video"].clone()
    item0 = ds[0]
    buffer = ds._buffer.data_ptr()
    ds[1]
    assert ds._buffer.data_ptr() == buffer  # the second video reused the first one's buffer
    assert torch.equal(item0["video"], first)
    assert torch.equal(first, torch.from_numpy(reference_frames(videos["paths"][0])).permute(3, 0, 1, 2))


def test_video_dataset_decodes_at_the_evaluation_size_and_pads_short_videos(videos):
    # the manifest has no frame size: the dataset probes it (demux only) and the decoder resizes
    ds = VideoDataset(_manifest(videos), clip_len=8, decode_size=16)
    frames = ds.decode(0)
    assert frames.shape == (30, 16, 24, 3)
    with VideoReader(videos["paths"][0]) as reader:
        assert torch.equal(frames, reader.read_all(size=(16, 24)))
    short = ds.decode(2)  # 5 frames < clip span 8: the last frame repeats
    assert short.shape[0] == 8
    with VideoReader(videos["paths"][2]) as reader:
        ref = reader.read_all(size=(16, 24))
    assert torch.equal(short[:5], ref) and bool((short[5:] == ref[-1]).all())
    # clip-wise and dense items of the short video: one clip at start 0 = read_clip's padded clip
    item = VideoDataset(_manifest(videos), clip_len=8, decode_size=(32, 48))[2]
    assert item["starts"].tolist() == [0]
    batch = collate_videos([item])
    clip = gather_clips(batch["video"], torch.tensor([0]), batch["starts"], 8)[0]
    expected = read_clip(videos["paths"][2], 0, 8).permute(3, 0, 1, 2).float() / 255
    torch.testing.assert_close(clip, expected)


def test_video_dataset_tensor_ops_run_single_threaded_and_restore(videos):
    seen = []

    def transform(frames):
        seen.append(torch.get_num_threads())
        return frames.permute(3, 0, 1, 2).float()

    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        VideoDataset(_manifest(videos, sized=True), clip_len=8, transform=transform)[0]
        assert seen == [1] and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(previous)


def test_worker_batches_equal_in_process_batches(videos):
    for mode in ("clips", "dense"):
        ds = VideoDataset(_manifest(videos, sized=True), clip_len=8, mode=mode, clip_stride=3)
        loader = DataLoader(ds, batch_size=2, num_workers=1, collate_fn=collate_videos)
        for k, batch in enumerate(loader):
            ref = collate_videos([ds[2 * k], ds[2 * k + 1]])
            assert torch.equal(batch["video"], ref["video"]) and torch.equal(batch["lengths"], ref["lengths"])
            assert ("starts" in batch) == (mode == "clips")
            if mode == "clips":
                assert torch.equal(batch["starts"], ref["starts"])
                assert torch.equal(batch["clip_counts"], ref["clip_counts"])
            for v, n in enumerate(batch["lengths"].tolist()):  # padding repeats each video's last frame
                tail = batch["video"][v, :, n:]
                assert torch.equal(tail, batch["video"][v, :, n - 1:n].expand_as(tail))


def test_clip_views_are_views_of_the_one_video():
    video = torch.randn(2, 3, 10, 4, 4)
    views = clip_views(video, 3, stride=2)  # span 5: starts 0..5
    assert views.shape == (2, 6, 3, 3, 4, 4)
    assert views.untyped_storage().data_ptr() == video.untyped_storage().data_ptr()  # no copy
    assert torch.equal(views[1, 4], video[1, :, 4:9:2])
    with pytest.raises(ValueError, match="L >= 5"):
        clip_views(video[:, :, :4], 3, stride=2)
