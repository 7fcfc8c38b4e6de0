"""vgg3d, the seed's 3D VGG-16: inflation from a torchvision-layout 2D VGG-16 against an independent 2D forward,
parameters and GMACs against the layer formulas (and VGG-16's published 138.36 M), dense scoring."""
import pytest
import torch
import torch.nn.functional as F

from lightning_temporal import count_gmacs
from lightning_temporal.models import build_backbone
from lightning_temporal.models.vgg3d import VGG3D, inflate_vgg16_state_dict, vgg3d, vgg3d_gmacs, vgg3d_param_count

CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


def _random_vgg16_2d(width=1.0, pool=7, seed=0):
    """A torchvision-layout VGG-16 state dict (features.N / classifier.N), random, written here."""
    g = torch.Generator().manual_seed(seed)
    sd, cin, i = {}, 3, 0
    for v in CFG:
        if v == "M":
            i += 1
            continue
        cout = max(1, round(v * width))
        sd[f"features.{i}.weight"] = torch.randn(cout, cin, 3, 3, generator=g) * (2 / (9 * cin)) ** 0.5
        sd[f"features.{i}.bias"] = torch.randn(cout, generator=g) * 0.1
        cin, i = cout, i + 2
    hidden = max(1, round(4096 * width))
    for j, (a, b) in zip((0, 3, 6), ((cin * pool * pool, hidden), (hidden, hidden), (hidden, 1000))):
        sd[f"classifier.{j}.weight"] = torch.randn(b, a, generator=g) * (1 / a) ** 0.5
        sd[f"classifier.{j}.bias"] = torch.randn(b, generator=g) * 0.1
    return sd


def _vgg16_2d_features(sd, img):
    """The 2D VGG-16 convolution stack with torch.nn.functional: img [N, 3, H, W] -> [N, C, H/32, W/32]."""
    x, i = img, 0
    for v in CFG:
        if v == "M":
            x = F.max_pool2d(x, 2)
            i += 1
        else:
            x = F.relu(F.conv2d(x, sd[f"features.{i}.weight"], sd[f"features.{i}.bias"], padding=1))
            i += 2
    return x


def test_vgg16_2d_parameter_count_is_the_published_138_36m_and_vgg3d_follows_the_formula():
    chans = [3] + [v for v in CFG if v != "M"]
    conv_w = sum(9 * a * b for a, b in zip(chans[:-1], chans[1:]))
    conv_b = sum(chans[1:])
    fc67 = (25088 * 4096 + 4096) + (4096 * 4096 + 4096)
    assert conv_w + conv_b + fc67 + 4096 * 1000 + 1000 == 138_357_544   # VGG-16, Simonyan & Zisserman 2015
    for k in (7, 2):
        expected = 3 * conv_w + conv_b + fc67 + (4096 * 128 + 128) + (128 * k + k)
        with torch.device("meta"):   # shapes only: no 660 MB of weights
            model = VGG3D(num_classes=k)
        assert sum(p.numel() for p in model.parameters()) == expected == vgg3d_param_count(k)


def test_inflated_constant_clip_gives_the_2d_features_and_logits_at_frames_out_of_reach_of_the_padding():
    width, pool, T = 0.25, 1, 29   # 13 temporal 3-tap convolutions reach 13 frames each way: frames 13..15
    sd = _random_vgg16_2d(width, pool)
    model = vgg3d(num_classes=5, width=width, pool_size=pool, dropout=0.0, pretrained_2d=sd).eval()
    img = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    clip = img[:, :, None].expand(1, 3, T, 32, 32).contiguous()   # the same frame T times
    with torch.no_grad():
        feat3d, _ = model.forward_features(clip)
        feat2d = _vgg16_2d_features(sd, img)
        mid = slice(13, T - 13)
        torch.testing.assert_close(feat3d[:, :, mid], feat2d[:, :, None].expand_as(feat3d[:, :, mid]),
                                   rtol=1e-4, atol=1e-5)
        # near the ends the zero padding is within reach: not the 2D features (the test can tell them apart)
        assert not torch.allclose(feat3d[:, :, 0], feat2d, rtol=1e-4, atol=1e-5)
        # per-frame head: fc6, fc7 (the 2D weights), then 4096 -> 128 -> C
        z = torch.flatten(F.adaptive_avg_pool2d(feat2d, pool), 1)
        z = F.relu(F.linear(z, sd["classifier.0.weight"], sd["classifier.0.bias"]))
        z = F.relu(F.linear(z, sd["classifier.3.weight"], sd["classifier.3.bias"]))
        h = model.head
        z = h.fc(F.relu(h.embed[0](z)))
        torch.testing.assert_close(h.frame_logits(feat3d)[:, mid], z[:, None].expand(1, 3, 5), rtol=1e-4, atol=1e-5)


def test_pretrained_2d_through_build_backbone_and_a_file_and_clear_errors(tmp_path):
    sd = _random_vgg16_2d(1 / 16, 1)
    path = tmp_path / "vgg16.pth"
    torch.save(sd, path)
    a = build_backbone("vgg3d", 3, width=1 / 16, pool_size=1, pretrained=str(path))
    w = sd["features.0.weight"]
    assert torch.equal(a.features[0].weight, w[:, :, None].repeat(1, 1, 3, 1, 1) / 3)
    assert torch.equal(a.head.classifier[3].weight, sd["classifier.3.weight"])
    bad = dict(sd)
    del bad["features.28.weight"]
    with pytest.raises(ValueError, match=r"missing \['features.28.weight'\]"):
        inflate_vgg16_state_dict(bad, VGG3D(3, width=1 / 16, pool_size=1))
    with pytest.raises(ValueError, match="shapes differ"):
        inflate_vgg16_state_dict(sd, VGG3D(3, width=1 / 8, pool_size=1))
    with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
        vgg3d(3, pretrained_2d=str(tmp_path / "absent.pth"))
    with pytest.raises(ValueError, match="vgg3d takes no SGS"):
        build_backbone("vgg3d", 3, width=1 / 16, sgs={"num_bins": 4})


def test_gmacs_follow_the_formula():
    model = vgg3d(num_classes=4, width=1 / 16, pool_size=2)
    clip = torch.randn(2, 3, 8, 64, 64)
    assert count_gmacs(model, clip) == pytest.approx(vgg3d_gmacs(4, 8, 64, 64, 1 / 16, pool_size=2), rel=1e-9)
    # full width at the seed's 16 x 112 x 112 clips, from the formula: 3 x the 2D convolutions' MACs per frame
    conv2d = sum(9 * a * b * s * s for a, b, s in [(3, 64, 112), (64, 64, 112), (64, 128, 56), (128, 128, 56),
                                                   (128, 256, 28), (256, 256, 28), (256, 256, 28), (256, 512, 14),
                                                   (512, 512, 14), (512, 512, 14), (512, 512, 7), (512, 512, 7),
                                                   (512, 512, 7)])
    fc = 25088 * 4096 + 4096 * 4096 + 4096 * 128 + 128 * 7
    assert vgg3d_gmacs(7, 16, 112, 112) == pytest.approx(16 * (3 * conv2d + fc) / 1e9)


def test_one_pass_over_a_video_gives_every_clip_score_and_the_module_scores_densely():
    from lightning_temporal import VideoClassifier

    torch.manual_seed(0)
    module = VideoClassifier("vgg3d", num_classes=3, backbone_kwargs={"width": 1 / 16, "pool_size": 1,
                                                                      "dropout": 0.0}).eval()
    video = torch.randn(2, 3, 12, 32, 32)
    with torch.no_grad():
        scores, mask, starts = module.dense_scores(video, torch.tensor([12, 10]), clip_len=4)
        frames = module.backbone.head.frame_logits(module.backbone.forward_features(video)[0])  # 2, 12, 3
    assert scores.shape == (2, 9, 3) and starts[0].tolist() == list(range(9))
    expected = torch.stack([frames[:, t:t + 4].amax(1) for t in range(9)], 1)   # max over each clip's frames
    torch.testing.assert_close(scores, expected)
    assert mask[1].tolist() == [True] * 7 + [False] * 2


def test_readme_figures_of_vgg3d():
    """README: 164.2 M parameters for 7 classes, 186 GMACs per 16 x 112 x 112 clip."""
    with torch.device("meta"):
        n = sum(p.numel() for p in VGG3D(num_classes=7).parameters())
    assert round(n / 1e6, 1) == 164.2
    assert round(vgg3d_gmacs(7, 16, 112, 112)) == 186
