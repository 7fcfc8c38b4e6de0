"""lightning_temporal.evaluation (the dense scoring and pooling math the module calls) against independent
computations written out clip by clip and video by video: the head applied to each clip's window of the one
full-video pass, the softmax temporal pooling formula in float64, the pooling weights per video."""
from __future__ import annotations

import math

import pytest
import torch

from lightning_temporal.evaluation import dense_clip_scores, pad_clip_scores, pool_video_scores, pooling_weights
from lightning_temporal.models.simple import SimpleConv3d

pytestmark = pytest.mark.usefixtures("one_thread")


def _padded_videos(lengths, longest, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    video = torch.randn(len(lengths), 3, longest, size, size, generator=g)
    for v, n in enumerate(lengths):  # padded like collate_videos: the last frame repeats
        video[v, :, n:] = video[v, :, n - 1:n]
    return video


@pytest.mark.parametrize("stride,pool", [(1, "max"), (1, "avg"), (2, "max"), (3, "avg")])
def test_dense_scores_are_the_head_on_each_clips_window_of_one_pass(stride, pool):
    """Temporal kernels of 3 (the receptive field crosses clip borders): every clip start's dense score is the
    head on that clip's frames of the one full pass over the video's phase, computed here clip by clip."""
    torch.manual_seed(0)
    net = SimpleConv3d(widths=(4, 6, 8, 8), temporal_pool=pool, num_classes=5).eval()
    clip_len, lengths = 4, [19, 13, (4 - 1) * stride + 1]
    video = _padded_videos(lengths, 19)
    with torch.no_grad():
        scores, mask, starts = dense_clip_scores(net, video, torch.tensor(lengths), clip_len, stride)
        span = (clip_len - 1) * stride + 1
        for v, n in enumerate(lengths):
            t = starts[v][mask[v]]
            assert t.tolist() == list(range(n - span + 1))  # every start, in order
            for p in range(stride):  # the pass over phase p: frames p, p + stride, ... (the tail repeats)
                idx = torch.arange(p, p + stride * (-(-19 // stride)), stride).clamp(max=18)
                feat, _ = net.forward_features(video[v:v + 1, :, idx])
                for s in [s for s in t.tolist() if s % stride == p]:
                    j = s // stride
                    want = net.head(feat[:, :, j:j + clip_len])[0]
                    got = scores[v][mask[v]][t.tolist().index(s)]
                    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_dense_scores_refuse_backbones_that_cannot_score_densely():
    with pytest.raises(TypeError, match="forward_features/head.forward_dense; use data.eval_mode: clips"):
        dense_clip_scores(torch.nn.Linear(2, 2), torch.zeros(1, 3, 8, 4, 4), torch.tensor([8]), 4)
    net = SimpleConv3d()
    net.temporal = torch.nn.Identity()  # stands for an SGS / attention module
    with pytest.raises(ValueError, match="without SGS/attention"):
        dense_clip_scores(net, torch.zeros(1, 3, 8, 4, 4), torch.tensor([8]), 4)


def _pool_formula(s, gamma):
    """y_c = sum_t softmax_t(gamma * s[:, c]) s[t, c] in float64 (max at 1e6), one video's clips s [T, C]."""
    s = s.double()
    if gamma >= 1e5:
        w = (s == s.max(0).values).double()
        w = w / w.sum(0)
    else:
        w = torch.softmax(gamma * s, dim=0)
    return (w * s).sum(0)


def test_pool_video_scores_is_the_formula_over_each_videos_own_clips():
    g = torch.Generator().manual_seed(3)
    counts = torch.tensor([5, 1, 9, 3])
    flat = torch.randn(int(counts.sum()), 4, generator=g) * 4
    scores, mask = pad_clip_scores(flat, counts)
    gammas = (1.0, 0.0, 0.5, 1e6)
    pooled = pool_video_scores(scores, mask, gammas)
    assert pooled.shape == (4, 4, 4) and pooled.dtype == torch.float32
    first = 0
    for v, k in enumerate(counts.tolist()):
        for i, gamma in enumerate(gammas):
            torch.testing.assert_close(pooled[i, v].double(), _pool_formula(flat[first:first + k], gamma),
                                       rtol=1e-5, atol=1e-5)
        first += k
    with pytest.raises(ValueError, match="no valid position"):
        pool_video_scores(scores, torch.zeros_like(mask), gammas)


def test_pooling_weights_are_each_videos_softmax_over_its_own_clips():
    g = torch.Generator().manual_seed(4)
    counts = torch.tensor([6, 2, 4])
    flat = torch.randn(int(counts.sum()), 3, generator=g)
    flat[8] = flat[9]  # video 2: a tie at its maximum of class 1 below
    flat[8, 1] = flat[9, 1] = 5.0
    scores, mask = pad_clip_scores(flat, counts)
    classes = torch.tensor([2, 0, 1])
    for gamma in (0.0, 1.0, 3.0, math.inf):
        w = pooling_weights(scores, mask, classes, gamma)
        first = 0
        for v, k in enumerate(counts.tolist()):
            s = flat[first:first + k, classes[v]].double()
            want = (s == s.max()).double() / (s == s.max()).sum() if math.isinf(gamma) else torch.softmax(gamma * s, 0)
            torch.testing.assert_close(w[v, :k].double(), want, rtol=1e-6, atol=1e-7)
            assert (w[v, k:] == 0).all()
            first += k


def test_dense_pass_reads_the_video_itself_at_clip_stride_one():
    """stride 1 and no SlowFast alpha: the backbone gets the batch's video tensor itself (no copy); stride 2: its
    phases side by side, frames p, p + 2, ..."""
    net = SimpleConv3d(widths=(4, 4, 4, 4)).eval()
    seen = []
    forward = net.forward_features
    net.forward_features = lambda x: (seen.append(x), forward(x))[1]
    video = _padded_videos([12, 9], 12)
    with torch.no_grad():
        dense_clip_scores(net, video, torch.tensor([12, 9]), 4, 1)
        dense_clip_scores(net, video, torch.tensor([12, 9]), 4, 2)
    assert seen[0] is video
    assert seen[1].shape == (4, 3, 6, 16, 16)
    assert torch.equal(seen[1][1], video[0, :, 1::2]) and torch.equal(seen[1][2], video[1, :, 0::2])
