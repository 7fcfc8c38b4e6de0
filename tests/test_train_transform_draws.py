"""``TrainTransform`` draws what its docstring says, in that order: the crop's top ``torch.randint(H - size + 1)``,
then its left ``torch.randint(W - size + 1)``, then the flip ``torch.rand(()) < 0.5``, from the generator it is
given. Replaying those draws on a generator with the same seed predicts every output exactly, so every crop
position (the last row and column included) and both flips occur with the documented odds."""
import pytest
import torch
import torch.nn.functional as F

from lightning_temporal.data.transforms import TrainTransform

MEAN, STD = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)


def _expected(clip, size, top, left, flip):
    x = clip.permute(0, 3, 1, 2).float()[..., top:top + size, left:left + size]  # no resize: short side = H
    if flip:
        x = x.flip(-1)
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    return ((x / 255 - mean) / std).transpose(0, 1)


@pytest.mark.parametrize("h, w, size", [(12, 15, 10), (10, 13, 10)])
def test_crop_and_flip_follow_the_documented_draws(h, w, size):
    clip = torch.randint(0, 256, (3, h, w, 3), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    t = TrainTransform(size, short_side=h, flip=True, mean=MEAN, std=STD)
    seen = set()
    for seed in range(200):
        replay = torch.Generator().manual_seed(seed)
        top = int(torch.randint(h - size + 1, (1,), generator=replay))
        left = int(torch.randint(w - size + 1, (1,), generator=replay))
        flip = bool(torch.rand((), generator=replay) < 0.5)
        out = t(clip, generator=torch.Generator().manual_seed(seed))
        torch.testing.assert_close(out, _expected(clip, size, top, left, flip), rtol=0, atol=1e-5)
        seen.add((top, left, flip))
    # every position, the last row and column included, with and without the flip
    assert seen == {(a, b, f) for a in range(h - size + 1) for b in range(w - size + 1) for f in (False, True)}
