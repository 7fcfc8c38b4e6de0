import pickle

import pytest
import torch
import torch.nn.functional as F

from lightning_temporal.data import transforms as T
from lightning_temporal.data.transforms import (CleanTransform, TrainTransform, center_crop_offsets, hflip,
                                                normalize, resize_short_side, short_side_size,
                                                to_float_clip)

MEAN = (0.4, 0.5, 0.6)
STD = (0.2, 0.25, 0.3)


def _clip(t=6, h=48, w=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (t, h, w, 3), dtype=torch.uint8, generator=g)


def _reference(clip, short_side, top, left, size, flip, mean, std):
    """Frame by frame: interpolate each frame on its own, slice, mirror by reversed column index, and
    normalise with the formula written per channel."""
    out = []
    for frame in clip:  # H, W, 3
        x = frame.permute(2, 0, 1).float()[None] / 255.0  # 1, 3, H, W
        h, w = x.shape[-2:]
        nh, nw = (short_side, int(short_side * w / h)) if h <= w else (int(short_side * h / w), short_side)
        x = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False, antialias=True)[0]
        x = x[:, top:top + size, left:left + size]
        if flip:
            x = x[:, :, torch.arange(size - 1, -1, -1)]
        x = torch.stack([(x[c] - mean[c]) / std[c] for c in range(3)])
        out.append(x)
    return torch.stack(out, dim=1)  # 3, T, size, size


@pytest.mark.parametrize("h,w,short,expect", [(48, 64, 32, (32, 42)), (64, 48, 32, (42, 32)),
                                              (144, 176, 112, (112, 136)), (50, 50, 20, (20, 20))])
def test_short_side_size(h, w, short, expect):
    assert short_side_size(h, w, short) == expect


def test_resize_matches_per_frame_interpolate():
    clip = _clip()
    frames = to_float_clip(clip)
    got = resize_short_side(frames, 30)
    assert got.shape == (6, 3, 30, 40)
    for t in range(clip.shape[0]):
        ref = F.interpolate(clip[t].permute(2, 0, 1).float()[None] / 255.0, size=(30, 40), mode="bilinear",
                            align_corners=False, antialias=True)[0]
        torch.testing.assert_close(got[t], ref, rtol=0, atol=1e-6)
    assert resize_short_side(frames, 48) is frames  # already that size: no work


def test_one_interpolate_call_per_clip(monkeypatch):
    calls = []
    real = F.interpolate

    def counting(*args, **kwargs):
        calls.append(args[0].shape)
        return real(*args, **kwargs)

    monkeypatch.setattr(T.F, "interpolate", counting)
    TrainTransform(24, 32)(_clip(t=16))
    CleanTransform(24, 32)(_clip(t=16))
    assert calls == [torch.Size([16, 3, 48, 64])] * 2


def test_clean_transform_matches_reference():
    clip = _clip()
    got = CleanTransform(crop_size=28, short_side=36, mean=MEAN, std=STD)(clip)
    # resized to 36x48: the centred 28x28 window starts at round(4.0)=4, round(10.0)=10
    assert center_crop_offsets(36, 48, 28) == (4, 10)
    ref = _reference(clip, 36, 4, 10, 28, False, MEAN, STD)
    assert got.dtype == torch.float32 and got.shape == (3, 6, 28, 28) and got.is_contiguous()
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-5)
    torch.testing.assert_close(CleanTransform(28, 36, MEAN, STD)(clip), got, rtol=0, atol=0)  # deterministic


def test_center_crop_offsets_rounding():
    assert center_crop_offsets(37, 48, 28) == (round(4.5), 10)
    with pytest.raises(ValueError, match="larger than the frames"):
        center_crop_offsets(20, 48, 28)


def test_train_transform_is_one_crop_and_flip_for_all_frames():
    clip = _clip(t=4, h=24, w=32)
    short, size = 20, 16  # resized 20x26: 5 x 11 crop positions, x 2 flips
    t = TrainTransform(size, short, flip=True, mean=MEAN, std=STD)
    candidates = {(top, left, flip): _reference(clip, short, top, left, size, flip, MEAN, STD)
                  for top in range(5) for left in range(11) for flip in (False, True)}
    g = torch.Generator().manual_seed(3)
    seen = []
    for _ in range(30):
        out = t(clip, generator=g)
        match = [k for k, ref in candidates.items() if torch.allclose(out, ref, rtol=0, atol=1e-5)]
        # whole clip equal to exactly one (crop, flip) choice: one draw applied to every frame
        assert len(match) == 1
        seen.append(match[0])
    assert {k[2] for k in seen} == {False, True}
    assert len({k[:2] for k in seen}) > 5
    # same seed, same draws
    g1, g2 = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
    torch.testing.assert_close(t(clip, g1), t(clip, g2), rtol=0, atol=0)


def test_train_transform_uses_global_rng_and_no_flip_option():
    clip = _clip(t=3, h=24, w=32)
    t = TrainTransform(16, 20, flip=False, mean=MEAN, std=STD)
    torch.manual_seed(5)
    a = t(clip)
    torch.manual_seed(5)
    torch.testing.assert_close(t(clip), a, rtol=0, atol=0)
    for _ in range(10):
        out = t(clip)
        assert any(torch.allclose(out, _reference(clip, 20, top, left, 16, False, MEAN, STD), rtol=0, atol=1e-5)
                   for top in range(5) for left in range(11))


def test_hflip_reverses_columns_and_normalize_formula():
    x = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(3, 2, 4, 5)  # C, T, H, W
    flipped = hflip(x)
    for j in range(5):
        torch.testing.assert_close(flipped[..., j], x[..., 4 - j], rtol=0, atol=0)
    mean, std = torch.tensor(MEAN), torch.tensor(STD)
    got = normalize(x, mean, std, channel_dim=0)
    for c in range(3):
        torch.testing.assert_close(got[c], (x[c] - MEAN[c]) / STD[c])


def test_bad_arguments_and_input():
    with pytest.raises(ValueError, match="crop_size=40 > short_side=32"):
        TrainTransform(40, 32)
    with pytest.raises(ValueError, match="crop_size=0"):
        CleanTransform(0, 32)
    with pytest.raises(ValueError, match="3 values"):
        CleanTransform(16, 32, mean=(0.5, 0.5), std=(1, 1, 1))
    with pytest.raises(ValueError, match="std > 0"):
        CleanTransform(16, 32, mean=(0.5,) * 3, std=(1, 0, 1))
    with pytest.raises(ValueError, match=r"uint8 \[T, H, W, 3\]; got torch.float32"):
        CleanTransform(16, 32)(torch.zeros(4, 32, 32, 3))
    with pytest.raises(ValueError, match=r"got torch.uint8 \(4, 3, 32, 32\)"):
        CleanTransform(16, 32)(torch.zeros(4, 3, 32, 32, dtype=torch.uint8))


def test_transforms_pickle():
    t = TrainTransform(16, 20, mean=MEAN, std=STD)
    t2 = pickle.loads(pickle.dumps(t))
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    clip = _clip(t=2, h=24, w=32)
    torch.testing.assert_close(t(clip, g1), t2(clip, g2), rtol=0, atol=0)
    assert "flip=True" in repr(t)
