"""The centre crop offset is rounded as torchvision does (``data/transforms.py``).

torchvision's ``center_crop`` (``torchvision/transforms/functional.py``) places the crop at
``crop_top = int(round((image_height - crop_height) / 2.0))`` and ``crop_left = int(round((image_width -
crop_width) / 2.0))``: Python's ``round``, which sends a half to the even integer (1.5 -> 2, 2.5 -> 2). The sizes
below include every case where that differs from flooring (3 -> 2 vs 1), from rounding halves up (5 -> 2 vs 3)
and from rounding halves down.
"""
import pytest
import torch

from lightning_temporal.data.transforms import CleanTransform, center_crop_offsets


def torchvision_offset(image: int, crop: int) -> int:
    """torchvision's formula, written out."""
    return int(round((image - crop) / 2.0))


@pytest.mark.parametrize("image, crop, want", [
    (67, 64, 2),    # 1.5 -> 2: flooring gives 1
    (71, 64, 4),    # 3.5 -> 4: flooring gives 3
    (65, 64, 0),    # 0.5 -> 0: rounding halves up gives 1
    (69, 64, 2),    # 2.5 -> 2: rounding halves up gives 3
    (37, 28, 4),    # 4.5 -> 4
    (66, 64, 1),    # even margins: exact
    (64, 64, 0),
])
def test_offset_examples(image, crop, want):
    assert torchvision_offset(image, crop) == want
    assert center_crop_offsets(image, 80, crop) == (want, torchvision_offset(80, crop))
    assert center_crop_offsets(80, image, crop) == (torchvision_offset(80, crop), want)


def test_offsets_match_torchvision_formula_on_every_size():
    for crop in (1, 2, 7, 28, 64):
        for height in range(crop, crop + 24):
            for width in range(crop, crop + 24, 5):
                assert center_crop_offsets(height, width, crop) == (
                    torchvision_offset(height, crop), torchvision_offset(width, crop)), (height, width, crop)


@pytest.mark.parametrize("height, width", [(67, 71), (65, 69), (71, 67)])
def test_clean_transform_crops_at_those_offsets(height, width):
    """The clean (evaluation) transform takes its window at those offsets: each pixel holds its row (red) and
    column (green), the short side is already the target so nothing is resized."""
    rows = torch.arange(height).view(height, 1).expand(height, width)
    cols = torch.arange(width).view(1, width).expand(height, width)
    frame = torch.stack([rows, cols, torch.zeros_like(rows)], -1).to(torch.uint8)
    clip = frame[None].repeat(2, 1, 1, 1)  # T=2, H, W, 3
    crop = 64
    t = CleanTransform(crop_size=crop, short_side=min(height, width), mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    out = t(clip)  # 3, T, 64, 64 in [0, 1]
    top, left = torchvision_offset(height, crop), torchvision_offset(width, crop)
    torch.testing.assert_close(out[0, :, :, 0] * 255, torch.arange(top, top + crop).float().expand(2, crop))
    torch.testing.assert_close(out[1, :, 0, :] * 255, torch.arange(left, left + crop).float().expand(2, crop))
