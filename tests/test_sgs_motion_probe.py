"""The SGS motion probe (benchmarks/sgs_motion.py): its data and its control are what the report says they are."""
import torch

from tests.bench import load_benchmark


def test_squares_wrap_around_the_torus():
    probe = load_benchmark("sgs_motion")
    m = probe.squares(torch.tensor([[[0, 27]]]), 28, half=3)[0, 0]
    rows, cols = m.any(1).nonzero().flatten().tolist(), m.any(0).nonzero().flatten().tolist()
    assert rows == [0, 1, 2, 25, 26, 27] and cols == [0, 1, 24, 25, 26, 27]  # 6x6, split over the edges
    assert int(m.sum()) == 36


def test_clips_hold_two_squares_per_frame_and_balanced_labels():
    probe = load_benchmark("sgs_motion")
    g = torch.Generator().manual_seed(3)
    x, y = probe.make_clips(6, g)
    bright = (x[:, 0] * 0.25 + 0.5) > 0.85  # [N, T, S, S]: the two squares
    assert bright.shape == (6, 32, 28, 28)
    # every frame holds the object and the distractor (36 px each, fewer where they overlap)
    counts = bright.flatten(2).sum(-1)
    assert int(counts.max()) <= 72 and int(counts.min()) >= 36
    # the event square travels 8 frames x 2 px: with the distractor, the lit area of the first and last frames
    # differs in every clip
    assert bool(((bright[:, 0] != bright[:, -1]).flatten(1).sum(-1) > 0).all())
    _, y = probe.make_clips(400, g)
    assert torch.bincount(y, minlength=4).min() > 70  # 4 classes, about 100 each


def test_identity_bins_control_matches_the_plain_cnn():
    """With Psi = identity the SGS path must compute exactly the plain CNN: the control isolates the binning."""
    probe = load_benchmark("sgs_motion")
    torch.manual_seed(0)
    plain = probe.build("none", "res2", 32).eval()
    ident = probe.build("identity", "res2", 32).eval()
    missing = ident.load_state_dict(plain.state_dict(), strict=False)
    assert all(k.startswith("temporal.") for k in missing.missing_keys) and not missing.unexpected_keys
    x = torch.randn(2, 3, 32, 28, 28)
    torch.testing.assert_close(ident(x), plain(x))
    assert ident.temporal.last_num_bins.tolist() == [32, 32]
    sgs = probe.build("sgs", "res2", 8).eval()
    sgs(x)
    assert int(sgs.temporal.last_num_bins.max()) <= 8  # the real SGS merges


def test_time_ordered_bins_sort_by_mean_frame_time():
    probe = load_benchmark("sgs_motion")
    w = torch.tensor([[[0.0, 0.0, 0.5, 0.5],     # bin 0: mean time 2.5
                       [1.0, 0.0, 0.0, 0.0],     # bin 1: mean time 0
                       [0.0, 0.0, 0.0, 0.0],     # empty
                       [0.0, 1.0, 0.0, 0.0]]])   # bin 3: mean time 1
    out, mask, counts = probe._time_ordered(w)
    assert counts.tolist() == [3] and mask.all()
    torch.testing.assert_close(out[0], w[0, [1, 3, 0]])
