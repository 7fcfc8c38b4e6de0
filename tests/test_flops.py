"""count_gmacs against closed-form multiply-accumulate counts."""
import pytest
import torch
from torch import nn

from lightning_temporal.flops import count_gmacs, gmacs_per_clip
from lightning_temporal.models.sgs import SimilarityGuidedSampling
from tests.untrained import UNTRAINED_SGS


class Toy(nn.Module):
    """conv3d (3 -> 8, 3x3x3 stride 1,2,2 pad 1; 1x3x3 with SGS, so that a static clip stays static) -> [SGS] -> conv3d (8 -> 16, 1x3x3, pad 0,1,1)
    -> global average pool -> linear (16 -> 5)."""

    def __init__(self, sgs=False):
        super().__init__()
        kt = 1 if sgs else 3
        self.conv1 = nn.Conv3d(3, 8, (kt, 3, 3), stride=(1, 2, 2), padding=(kt // 2, 1, 1))
        self.sgs = SimilarityGuidedSampling(8, embed_dim=4, **UNTRAINED_SGS) if sgs else None
        self.conv2 = nn.Conv3d(8, 16, (1, 3, 3), padding=(0, 1, 1))
        self.fc = nn.Linear(16, 5)

    def forward(self, x):
        x = self.conv1(x)
        if self.sgs is not None:
            x, _ = self.sgs(x)
        x = self.conv2(x)
        return self.fc(x.mean(dim=(2, 3, 4)))


def closed_form_macs(t, h, w, bprime=None):
    """MACs of Toy on one clip of T x H x W (bias adds are not multiply-accumulates)."""
    h2, w2 = (h - 1) // 2 + 1, (w - 1) // 2 + 1
    macs = 8 * 3 * (9 if bprime is not None else 27) * t * h2 * w2
    t2 = t
    if bprime is not None:
        macs += t * (8 * 4 + 4 * 4)  # embedding MLP: C -> C/2 -> D per frame
        macs += 8 * bprime * t * h2 * w2  # O_b = sum_t Psi[b, t] I_t (padded bins included: they ran)
        t2 = bprime
    macs += 16 * 8 * 9 * t2 * h2 * w2
    macs += 16 * 5
    return macs


def test_conv_linear_closed_form():
    model = Toy()
    clip = torch.randn(3, 3, 6, 16, 12)
    assert count_gmacs(model, clip) * 1e9 == pytest.approx(closed_form_macs(6, 16, 12), rel=1e-12)
    assert count_gmacs(model, clip[0]) == count_gmacs(model, clip)  # one clip [C, T, H, W] also accepted


def test_each_clip_counts_its_own_bins():
    torch.manual_seed(0)
    model = Toy(sgs=True)
    clip = torch.randn(3, 3, 8, 16, 16)
    clip[1] = clip[1, :, :1]  # static clip: SGS keeps 1 bin
    model.train()
    per_clip = gmacs_per_clip(model, clip)
    assert model.training and model.sgs.training  # modes restored
    expected = []
    model.eval()
    with torch.no_grad():
        for i in range(3):
            model(clip[i : i + 1])
            expected.append(closed_form_macs(8, 16, 16, int(model.sgs.last_num_bins[0])) / 1e9)
    assert int(model.sgs.last_num_bins[0]) >= 1
    assert per_clip == pytest.approx(expected, rel=1e-12)
    assert len(set(per_clip)) > 1  # the static clip costs less
    assert per_clip[1] == pytest.approx(closed_form_macs(8, 16, 16, 1) / 1e9, rel=1e-12)
    assert count_gmacs(model, clip) == pytest.approx(sum(expected) / 3, rel=1e-12)


def test_bad_clip_is_refused():
    with pytest.raises(ValueError, match="clip"):
        count_gmacs(Toy(), torch.zeros(3, 8))


def test_counts_in_eval_mode_and_gives_each_submodule_its_flag_back():
    # the counting runs in eval mode (BatchNorm on running statistics, as at inference); afterwards every
    # submodule has its own flag again: one the user froze in eval mode stays frozen, also when the model raises
    seen = []

    class Recorder(nn.Module):
        def __init__(self, fail=False):
            super().__init__()
            self.frozen = nn.BatchNorm3d(3).eval()
            self.drop = nn.Dropout(0.5)
            self.fail = fail

        def forward(self, x):
            seen.append({name: m.training for name, m in self.named_modules()})
            if self.fail:
                raise RuntimeError("boom")
            return self.drop(self.frozen(x)).sum()

    for fail in (False, True):
        model = Recorder(fail)
        assert model.training and model.drop.training and not model.frozen.training
        if fail:
            with pytest.raises(RuntimeError, match="boom"):
                gmacs_per_clip(model, torch.zeros(2, 3, 2, 4, 4))
        else:
            gmacs_per_clip(model, torch.zeros(2, 3, 2, 4, 4))
        assert seen and not any(v for modes in seen for v in modes.values())  # all in eval while counting
        assert model.training and model.drop.training and not model.frozen.training
        seen.clear()
