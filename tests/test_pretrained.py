"""Published Kinetics checkpoints load into our backbones and give the reference implementation's logits.

Reference: PyTorchVideo 0.1.5 (the library whose hub serves X3D_S.pyth, X3D_M.pyth, SLOW_8x8_R50.pyth and
SLOWFAST_8x8_R50.pyth). Its models are built with random weights (BatchNorm statistics included), saved in
the hub's file format ``{"model_state": state_dict}``, loaded with ``build_backbone(..., pretrained=path)``
and both are run on the same clip in eval mode. pytorchvideo is imported behind a test-local stand-in for
``torchvision.ops`` (see ``tests/pytorchvideo_ref.py``): torchvision does not import with this CPU torch.

torchvision's ``r3d_18`` layout is checked against an independent transcription of torchvision's forward pass
(``torchvision/models/video/resnet.py``: BasicStem, BasicBlock with Conv3DSimple, strides 1/2/2/2 in time
and space, global average pool, fc) written below with ``torch.nn.functional`` on the torchvision-named
state dict: no torchvision import.
"""
import warnings

import pytest
import torch
import torch.nn.functional as F

from lightning_temporal import VideoClassifier, build_backbone
from lightning_temporal.models.pretrained import load_pretrained, read_checkpoint
from tests.pytorchvideo_ref import import_pytorchvideo, randomise_, save_hub_checkpoint

hub, create_x3d, create_resnet, create_slowfast = import_pytorchvideo()

T, S = 4, 64  # clip length and crop of the test input; res5 maps are S / 32 = 2 pixels wide


def _reference(name):
    """PyTorchVideo's model as its hub function builds it, except the head's pool kernel (no weights), which
    is sized for the small test clip instead of 13x160^2 / 8x224^2; ``head_activation=None`` gives logits (the
    hub X3D ends with a softmax)."""
    if name in ("x3d_s", "x3d_m"):
        return create_x3d(input_clip_length=T, input_crop_size=S, depth_factor=2.2, head_activation=None)
    if name == "slow_r50":
        return create_resnet(stem_conv_kernel_size=(1, 7, 7), head_pool_kernel_size=(T, S // 32, S // 32),
                             model_depth=50)
    return hub.slowfast_r50(pretrained=False, head_pool_kernel_sizes=((2 * T // 4, 2, 2), (2 * T, 2, 2)))


def _reference_input(name, clip):
    if name == "slowfast_r50":  # the hub model takes [slow, fast]; ours takes the fast clip, slow = every 4th
        return [clip[:, :, ::4], clip]
    return clip


def _logit_gap(ours, ref):
    return float((ours - ref).abs().max() / ref.abs().max())


@pytest.mark.parametrize("name", ["x3d_s", "x3d_m", "slow_r50", "slowfast_r50"])
def test_pytorchvideo_hub_checkpoint_gives_the_reference_logits(name, tmp_path):
    torch.manual_seed(0)
    ref = randomise_(_reference(name)).eval()
    if name.startswith("x3d"):  # the hub's file format ...
        source = save_hub_checkpoint(ref, tmp_path / f"{name}.pyth")
    else:  # ... and, for the 130 MB ResNets, the same dict in memory
        source = {"model_state": ref.state_dict()}
    ours = build_backbone(name, num_classes=400, pretrained=source).eval()
    clip = torch.randn(2, 3, 2 * T if name == "slowfast_r50" else T, S, S)
    with torch.no_grad():
        want = ref(_reference_input(name, clip))
        got = ours(clip)
    assert want.shape == got.shape == (2, 400)
    assert want.abs().max() > 0.1 and torch.isfinite(want).all()
    assert _logit_gap(got, want) <= 1e-4, f"{name}: logits differ by {_logit_gap(got, want):.2e} of their scale"


@pytest.mark.parametrize("name", ["x3d_s", "slow_r50"])
def test_reference_builders_match_the_hub_functions_key_for_key(name):
    """The models built above hold exactly the parameters of the hub functions' models (hence of the files);
    slowfast_r50 is the hub function itself."""
    builder = {"x3d_s": hub.x3d_s, "slow_r50": hub.slow_r50}[name]
    want = {k: tuple(v.shape) for k, v in builder(pretrained=False).state_dict().items()}
    got = {k: tuple(v.shape) for k, v in _reference(name).state_dict().items()}
    assert got == want


def test_finetuning_reinitialises_the_head_with_a_warning_and_keeps_sgs_fresh(tmp_path):
    ref = randomise_(_reference("x3d_s")).eval()
    path = save_hub_checkpoint(ref, tmp_path / "X3D_S.pyth")
    torch.manual_seed(1)
    with pytest.warns(UserWarning, match=r"400 classes, this model 7: head.fc is re-initialised"):
        net = build_backbone("x3d_s", num_classes=7, sgs={"after": "res2"}, pretrained=path)
    torch.manual_seed(1)
    fresh = build_backbone("x3d_s", num_classes=7, sgs={"after": "res2"})
    sd, ref_sd = net.state_dict(), ref.state_dict()
    assert torch.equal(sd["stages.res3.0.conv_b.0.weight"], ref_sd["blocks.2.res_blocks.0.branch2.conv_b.weight"])
    assert torch.equal(sd["head.hidden.0.weight"], ref_sd["blocks.5.pool.post_conv.weight"][..., 0, 0, 0])
    assert net.head.fc.weight.shape == (7, 2048)
    # the temporal module starts as built (its initialisation, same seed), untouched by the file; so does fc
    temporal = [k for k in sd if k.startswith("temporal.")]
    assert temporal and all(torch.equal(sd[k], fresh.state_dict()[k]) for k in temporal + ["head.fc.weight"])


def test_video_classifier_loads_through_backbone_kwargs(tmp_path):
    ref = randomise_(_reference("x3d_m")).eval()
    path = save_hub_checkpoint(ref, tmp_path / "X3D_M.pyth")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # same class count: nothing to warn about
        model = VideoClassifier("x3d_m", num_classes=400, backbone_kwargs={"pretrained": path}).eval()
    clip = torch.randn(1, 3, T, S, S)
    with torch.no_grad():
        assert _logit_gap(model(clip), ref(clip)) <= 1e-4


def test_missing_and_unexpected_keys_are_listed(tmp_path):
    state = randomise_(_reference("x3d_s")).state_dict()
    broken = dict(state)
    del broken["blocks.3.res_blocks.1.branch2.conv_b.weight"]
    broken["blocks.9.extra.weight"] = torch.zeros(3)
    with pytest.raises(ValueError) as err:
        build_backbone("x3d_s", num_classes=400, pretrained={"model_state": broken})
    msg = str(err.value)
    assert "stages.res4.1.conv_b.0.weight" in msg and "missing" in msg
    assert "blocks.9.extra.weight" in msg and "no place in x3d_s" in msg
    # a shape that differs outside the classifier is an error too
    wrong = dict(state)
    wrong["blocks.1.res_blocks.0.branch2.conv_a.weight"] = torch.zeros(54, 24, 3, 1, 1)
    with pytest.raises(ValueError, match=r"stages.res2.0.conv_a.0.weight \(54, 24, 3, 1, 1\) vs \(54, 24, 1, 1, 1\)"):
        build_backbone("x3d_s", num_classes=400, pretrained=wrong)
    # a file of another family is refused, naming the layouts read
    with pytest.raises(ValueError, match="no layout this backbone reads.*another network"):
        build_backbone("slow_r50", num_classes=400, pretrained=state)


def test_no_download_a_missing_file_says_where_to_get_it(tmp_path):
    with pytest.raises(FileNotFoundError,
                       match="nothing is downloaded.*x3d_s's Kinetics weights are at https://.*/X3D_S.pyth"):
        build_backbone("x3d_s", num_classes=4, pretrained=str(tmp_path / "X3D_S.pyth"))
    (tmp_path / "junk.pyth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="could not be read as tensors"):
        read_checkpoint(str(tmp_path / "junk.pyth"))


# ----------------------------------------------------------------------------------- torchvision r3d_18
def _torchvision_r3d18_state(num_classes=400, seed=0):
    """A random state dict with torchvision's r3d_18 names and shapes (from torchvision's source)."""
    g = torch.Generator().manual_seed(seed)

    def conv(o, i, k):
        return torch.randn(o, i, *k, generator=g) * (2.0 / (i * k[0] * k[1] * k[2])) ** 0.5

    def bn(prefix, n, sd):
        sd[f"{prefix}.weight"] = 0.5 + torch.rand(n, generator=g)
        sd[f"{prefix}.bias"] = 0.2 * torch.randn(n, generator=g)
        sd[f"{prefix}.running_mean"] = 0.2 * torch.randn(n, generator=g)
        sd[f"{prefix}.running_var"] = 0.5 + torch.rand(n, generator=g)
        sd[f"{prefix}.num_batches_tracked"] = torch.tensor(7)

    sd = {"stem.0.weight": conv(64, 3, (3, 7, 7))}
    bn("stem.1", 64, sd)
    inplanes = 64
    for layer, planes in zip(range(1, 5), (64, 128, 256, 512)):
        for j in range(2):
            p = f"layer{layer}.{j}"
            sd[f"{p}.conv1.0.weight"] = conv(planes, inplanes if j == 0 else planes, (3, 3, 3))
            bn(f"{p}.conv1.1", planes, sd)
            sd[f"{p}.conv2.0.weight"] = conv(planes, planes, (3, 3, 3))
            bn(f"{p}.conv2.1", planes, sd)
            if j == 0 and layer > 1:  # stride 2 or a channel change: downsample
                sd[f"{p}.downsample.0.weight"] = conv(planes, inplanes, (1, 1, 1))
                bn(f"{p}.downsample.1", planes, sd)
        inplanes = planes
    sd["fc.weight"] = torch.randn(num_classes, 512, generator=g) * 0.05
    sd["fc.bias"] = torch.randn(num_classes, generator=g) * 0.1
    return sd


def _torchvision_r3d18_forward(sd, x):
    """torchvision's VideoResNet(BasicBlock, [Conv3DSimple] * 4, [2, 2, 2, 2], BasicStem).forward, eval mode."""
    def bn(y, p):
        return F.batch_norm(y, sd[f"{p}.running_mean"], sd[f"{p}.running_var"], sd[f"{p}.weight"],
                            sd[f"{p}.bias"], training=False, eps=1e-5)

    x = F.relu(bn(F.conv3d(x, sd["stem.0.weight"], stride=(1, 2, 2), padding=(1, 3, 3)), "stem.1"))
    for layer, stride in zip(range(1, 5), (1, 2, 2, 2)):
        for j in range(2):
            p, s = f"layer{layer}.{j}", (stride if j == 0 else 1)
            out = F.relu(bn(F.conv3d(x, sd[f"{p}.conv1.0.weight"], stride=s, padding=1), f"{p}.conv1.1"))
            out = bn(F.conv3d(out, sd[f"{p}.conv2.0.weight"], padding=1), f"{p}.conv2.1")
            res = x
            if f"{p}.downsample.0.weight" in sd:
                res = bn(F.conv3d(x, sd[f"{p}.downsample.0.weight"], stride=s), f"{p}.downsample.1")
            x = F.relu(out + res)
    x = F.adaptive_avg_pool3d(x, 1).flatten(1)
    return F.linear(x, sd["fc.weight"], sd["fc.bias"])


def test_torchvision_r3d18_state_dict_gives_torchvisions_logits():
    sd = _torchvision_r3d18_state()
    net = build_backbone("r3d18", num_classes=400, pretrained=sd).eval()
    clip = torch.randn(2, 3, 8, 32, 32)
    with torch.no_grad():
        want = _torchvision_r3d18_forward(sd, clip)
        got = net(clip)
    assert want.abs().max() > 0.1
    assert _logit_gap(got, want) <= 1e-4, _logit_gap(got, want)


def test_torchvision_state_dict_into_a_model_with_other_classes_and_sgs():
    sd = _torchvision_r3d18_state(num_classes=400)
    with pytest.warns(UserWarning, match="head.fc is re-initialised"):
        net = build_backbone("r3d18", num_classes=5, sgs={"after": "res2"}, pretrained=sd)
    assert torch.equal(net.state_dict()["stages.res3.0.shortcut.0.weight"], sd["layer2.0.downsample.0.weight"])
    info = load_pretrained(build_backbone("r3d18", num_classes=400, attention={"after": "res2"}), "r3d18", sd)
    assert info["reinitialised"] == [] and info["fresh"] and all(k.startswith("temporal.") for k in info["fresh"])


def test_this_packages_own_state_dict_loads_into_any_backbone(tmp_path):
    trained = build_backbone("r3d18_a1", num_classes=10)
    torch.save(trained.state_dict(), tmp_path / "mine.pt")
    with pytest.warns(UserWarning, match="10 classes, this model 3"):
        net = build_backbone("r3d18_a1", num_classes=3, pretrained=str(tmp_path / "mine.pt"))
    sd, want = net.state_dict(), trained.state_dict()
    assert all(torch.equal(sd[k], want[k]) for k in sd if not k.startswith("head.fc."))


def test_a_finetuned_checkpoint_restores_without_the_file_it_started_from(tmp_path):
    """The fine-tuned weights are in the Lightning checkpoint: load_from_checkpoint must not re-read (or need)
    the pretrained file, and the checkpoint must not hold it."""
    import lightning as L

    start = tmp_path / "start.pt"
    torch.save(build_backbone("simple3d", num_classes=3).state_dict(), start)
    model = VideoClassifier("simple3d", num_classes=3, backbone_kwargs={"pretrained": str(start)})
    with torch.no_grad():
        next(model.parameters()).add_(1.0)  # "fine-tuned": differs from the file
    trainer = L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.strategy.connect(model)
    trainer.save_checkpoint(tmp_path / "finetuned.ckpt")
    start.unlink()
    restored = VideoClassifier.load_from_checkpoint(tmp_path / "finetuned.ckpt")
    assert "pretrained" not in restored.hparams["backbone_kwargs"]
    want = model.state_dict()
    assert all(torch.equal(v, want[k]) for k, v in restored.state_dict().items())
