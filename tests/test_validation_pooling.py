"""Validation pools each video over its own clips only: in a batch of videos of different lengths, the padding
positions of the shorter videos never enter their softmax temporal pooling.

Seen from outside the module: the video logits that validation hands to its metrics (every video, every γ_p)
and the logged ``val/loss``, against an independent pooling written out per video in float64,
y_c = Σ_t softmax_t(γ_p·s_{·,c})_t·s_{t,c} (seed Eq. S.3; max at γ_p = 1e6), over the scores of that video's own
clips, each scored alone.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from lightning import Trainer
from torch import nn

from lightning_temporal import TemporalDataModule, VideoClassifier
from lightning_temporal.models.backbone import StagedBackbone
from lightning_temporal.models.head import ClassifierHead
from lightning_temporal.module import pooling_key
from tests.videos import write_video

pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.filterwarnings("ignore:1 of 5 val videos are shorter than one clip")]

CLIP_LEN = 8
GAMMAS = (1.0, 0.0, 1e6)


@pytest.fixture(scope="module")
def val_csv(tmp_path_factory):
    """Five videos of very different lengths (one shorter than a clip), labels 0, 1, 2, 0, 1."""
    root = tmp_path_factory.mktemp("pool_videos")
    lengths = [40, 13, 5, 27, 33]
    for i, n in enumerate(lengths):
        write_video(str(root / f"v{i}.mp4"), num_frames=n, size=(32, 48), gop=8)
    csv = root / "val.csv"
    csv.write_text("path,label,num_frames\n" + "".join(f"v{i}.mp4,c{i % 3},{n}\n" for i, n in enumerate(lengths)))
    return str(csv)


class FrameNet(StagedBackbone):
    """Temporal kernel 1 (a clip's dense score equals its clip-wise score); scaled so that clip logits differ a
    lot along a video and from the zeros of padding."""

    def __init__(self):
        super().__init__()
        self.stages = nn.ModuleDict({
            "stem": nn.Sequential(nn.Conv3d(3, 6, (1, 3, 3), padding=(0, 1, 1)), nn.ReLU()),
            "res2": nn.Conv3d(6, 6, 1)})
        self.stage_out = {"stem": 6, "res2": 6}
        self.head = ClassifierHead(6, 3, temporal_pool="avg", spatial_pool="avg")
        with torch.no_grad():
            self.head.fc.weight.mul_(20.0)
            self.head.fc.bias.copy_(torch.tensor([-2.0, 1.0, 3.0]))


def _reference(model, dataset, gamma, dense: bool):
    """Video logits [V, K] pooled over each video's own clips, each clip scored alone (float64 pooling)."""
    out = []
    for i in range(len(dataset)):  # the reference: one video at a time
        with torch.inference_mode():  # as in validation (the dataset's decode buffer was made in inference mode)
            item = dataset[i]
        video = item["video"]  # C, L, H, W
        if dense:
            starts = range(max(0, video.shape[1] - CLIP_LEN) + 1)
        else:
            starts = item["starts"].tolist()
        with torch.no_grad():
            s = torch.stack([model.score_clips(video[None, :, t:t + CLIP_LEN])[0] for t in starts]).double()
        w = torch.softmax(gamma * s, dim=0) if gamma < 1e5 else (s == s.max(0).values).double()
        out.append((w * s).sum(0))
    return torch.stack(out)


@pytest.mark.parametrize("eval_mode", ["clips", "dense"])
def test_validation_pools_each_video_over_its_own_clips(val_csv, tmp_path, monkeypatch, eval_mode):
    torch.manual_seed(0)
    model = VideoClassifier(FrameNet(), num_classes=3, gamma_p=GAMMAS[0], report_gamma_p=GAMMAS[1:], eval_chunk=5)
    dm = TemporalDataModule(val_manifest=val_csv, clip_len=CLIP_LEN, crop_size=24, short_side=32,
                            mean=(0.5,) * 3, std=(0.25,) * 3, eval_batch_size=5, eval_clip_stride=3,
                            eval_mode=eval_mode, progress=False)
    seen = {}  # pooling key -> (video logits, labels) handed to the metrics
    for g in GAMMAS:
        metrics = model.metrics[f"val_{pooling_key(g)}"]

        def update(logits, labels, _key=pooling_key(g), _update=metrics.update):
            seen.setdefault(_key, []).append((logits.detach().clone(), labels.clone()))
            return _update(logits, labels)
        monkeypatch.setattr(metrics, "update", update)
    trainer = Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(tmp_path))
    out = trainer.validate(model, datamodule=dm, verbose=False)[0]

    ds = dm.datasets["val"]
    labels = torch.tensor([ds.manifest[i].label for i in range(len(ds))])
    model.eval()
    for g in GAMMAS:
        ((got, got_labels),) = seen[pooling_key(g)]  # one batch of all five videos (padded to the longest)
        want = _reference(model, ds, g, dense=eval_mode == "dense")
        assert torch.equal(got_labels, labels)
        torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-4, msg=f"gamma_p={g}")
        key = "val/top1" if g == GAMMAS[0] else f"val/{pooling_key(g)}/top1"
        assert out[key] == pytest.approx(float((want.argmax(1) == labels).float().mean()))
    want_loss = F.cross_entropy(_reference(model, ds, GAMMAS[0], dense=eval_mode == "dense"), labels)
    assert out["val/loss"] == pytest.approx(float(want_loss), rel=1e-4)
