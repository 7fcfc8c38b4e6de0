"""SlowFast-8x8-R50 (Feichtenhofer et al. 2019, PyTorchVideo ``slowfast_r50`` layout): ``slowfast_r50``.

One 32-frame clip goes in; the slow pathway takes every alpha-th frame (8 frames), the fast pathway all 32
with beta = 1/8 of the channels. After the stem, res2, res3 and res4 a time-strided conv (kt x 1 x 1, stride
alpha, 2 * beta * C channels) carries fast features into the slow pathway by channel concatenation.

With SGS (seed 002 §A) each pathway gets its own module after a stage (default ``res2``), working on temporal
blocks (``block_size`` 2 on the slow pathway, 8 on the fast one). Dropping empty bins makes the lateral and
the slow tensor disagree in length; the shorter one is zero-padded at the end to the longer (the seed zero-pads;
the released code pads both ends, which would make a sample's result depend on its batch), and the slow mask
becomes the union of the two masks. Each side's own padded positions are zeroed before the merge, so a
sample's logits do not depend on the other samples' B'.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from lightning_temporal.models.backbone import TemporalInsertion, apply_mask, init_weights, run_stage_then
from lightning_temporal.models.head import ClassifierHead
from lightning_temporal.models.resnet3d import Bottleneck3d

Mask = Optional[torch.Tensor]
PATHWAYS = ("slow", "fast")


def _pad_time(x: torch.Tensor, length: int) -> torch.Tensor:
    """Zero-pad ``x [N, C, T, H, W]`` at the end of T to ``length``."""
    return x if x.shape[2] == length else F.pad(x, (0, 0, 0, 0, 0, length - x.shape[2]))


def _pad_mask(mask: Mask, t: int, length: int, n: int, device) -> torch.Tensor:
    """A mask of ``t`` positions (None = all valid) padded with False to ``length``."""
    if mask is None:
        mask = torch.ones(n, t, dtype=torch.bool, device=device)
    return F.pad(mask, (0, length - mask.shape[1]), value=False)


def merge_time(a: torch.Tensor, ma: Mask, b: torch.Tensor, mb: Mask) -> Tuple[torch.Tensor, Mask]:
    """Concatenate ``a`` and ``b`` along channels after zero-padding the shorter in time; the mask is the
    union of both (a position is valid if either side has data there)."""
    ta, tb = a.shape[2], b.shape[2]
    t = max(ta, tb)
    out = torch.cat([_pad_time(a, t), _pad_time(b, t)], dim=1)
    if ma is None and mb is None and ta == tb:
        return out, None
    n = a.shape[0]
    return out, _pad_mask(ma, ta, t, n, a.device) | _pad_mask(mb, tb, t, n, a.device)


def _stem(c: int, kt: int) -> nn.Sequential:
    """A pathway's stem: kt x 7 x 7 conv (3 -> c, spatial stride 2), BN, ReLU, 1 x 3 x 3 max pool (stride 2)."""
    return nn.Sequential(
        nn.Conv3d(3, c, (kt, 7, 7), stride=(1, 2, 2), padding=(kt // 2, 3, 3), bias=False),
        nn.BatchNorm3d(c), nn.ReLU(inplace=True),
        nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)),
    )


class FastToSlow(nn.Module):
    """Lateral connection: kt x 1 x 1 conv with temporal stride alpha (fast C -> 2 beta C_slow), BN, ReLU."""

    def __init__(self, cin: int, cout: int, kt: int, alpha: int) -> None:
        super().__init__()
        self.alpha = alpha
        self.conv = nn.Conv3d(cin, cout, (kt, 1, 1), stride=(alpha, 1, 1), padding=(kt // 2, 0, 0), bias=False)
        self.bn = nn.BatchNorm3d(cout)

    def forward(self, fast: torch.Tensor, mask: Mask) -> Tuple[torch.Tensor, Mask]:
        y = torch.relu(self.bn(self.conv(fast)))  # N, cout, ceil(Tf / alpha), H, W
        return y, (None if mask is None else mask[:, :: self.alpha])


class SlowFast(TemporalInsertion):
    """Two-pathway ResNet-50 with lateral connections and one :class:`ClassifierHead`.

    ``forward_features`` returns one tensor: the fast features averaged over each group of alpha positions
    (so they line up with the slow positions), concatenated with the slow features along channels
    (``[N, 2048 + 256, Ts, H/32, W/32]``). Average-pooling it over time equals the usual per-pathway
    average pooling; ``forward_dense`` gives one logit vector per slow position.

    Example::

        >>> m = slowfast_r50(num_classes=5)
        >>> feat, mask = m.forward_features(torch.randn(1, 3, 16, 64, 64))
        >>> feat.shape, m.head(feat, mask).shape
        (torch.Size([1, 2304, 4, 2, 2]), torch.Size([1, 5]))

    Args:
        alpha: frame-rate ratio (slow takes every alpha-th frame). The clip length must be a multiple of it.
        beta_inv: channel ratio slow / fast (8).
        fusion_kernel: temporal kernel of the lateral convs. 7, as in the released 8x8 models (PySlowFast
            ``SLOWFAST_8x8_R50.yaml``, PyTorchVideo ``slowfast_r50``): it reproduces their 34.57M params and
            65.71 GMACs exactly; the paper's 5 (its 4x16 example) gives 34.48M / 65.30.
        fusion_ratio: lateral output channels = fusion_ratio x fast channels.
        depths, widths: bottleneck stages res2..res5 of the slow pathway (fast widths are widths / beta_inv).
        num_classes, temporal_pool, spatial_pool, dropout: the head.
    """

    def __init__(
        self,
        *,
        alpha: int = 4,
        beta_inv: int = 8,
        fusion_kernel: int = 7,
        fusion_ratio: int = 2,
        depths: Sequence[int] = (3, 4, 6, 3),
        widths: Sequence[int] = (64, 128, 256, 512),
        slow_temporal_kernels: Sequence[int] = (1, 1, 3, 3),
        fast_temporal_kernels: Sequence[int] = (3, 3, 3, 3),
        num_classes: int = 400,
        temporal_pool: str = "avg",
        spatial_pool: str = "avg",
        dropout: float = 0.5,
        zero_init_residual: bool = True,
    ) -> None:
        super().__init__()
        if alpha < 1 or beta_inv < 1 or fusion_ratio < 1 or fusion_kernel < 1 or fusion_kernel % 2 == 0:
            raise ValueError(
                f"alpha, beta_inv, fusion_ratio must be >= 1 and fusion_kernel odd, got {alpha}, {beta_inv}, "
                f"{fusion_ratio}, {fusion_kernel}"
            )
        self.alpha = alpha
        stem_c = widths[0]
        slow_stages = {"stem": _stem(stem_c, 1)}  # N, 64, T/alpha, H/4, W/4
        fast_stages = {"stem": _stem(stem_c // beta_inv, 5)}  # N, 8, T, H/4, W/4
        fusions = {"stem": FastToSlow(stem_c // beta_inv, fusion_ratio * stem_c // beta_inv, fusion_kernel, alpha)}
        self.stage_out: Dict[str, Tuple[int, int]] = {"stem": (stem_c, stem_c // beta_inv)}  # (slow, fast)
        cs = stem_c + fusion_ratio * stem_c // beta_inv
        cf = stem_c // beta_inv
        names = [f"res{i + 2}" for i in range(len(depths))]
        for i, name in enumerate(names):
            inner_s, inner_f = widths[i], widths[i] // beta_inv
            out_s, out_f = 4 * inner_s, 4 * inner_f
            ss = 1 if i == 0 else 2
            slow_stages[name] = nn.Sequential(*[
                Bottleneck3d(cs if j == 0 else out_s, inner_s, out_s, kt=slow_temporal_kernels[i],
                             stride_s=ss if j == 0 else 1) for j in range(depths[i])
            ])  # N, out_s, Ts, H / (4 * 2^i), W / (4 * 2^i)
            fast_stages[name] = nn.Sequential(*[
                Bottleneck3d(cf if j == 0 else out_f, inner_f, out_f, kt=fast_temporal_kernels[i],
                             stride_s=ss if j == 0 else 1) for j in range(depths[i])
            ])  # N, out_f, Tf, H / (4 * 2^i), W / (4 * 2^i)
            self.stage_out[name] = (out_s, out_f)
            cs, cf = out_s, out_f
            if i < len(names) - 1:  # no lateral after the last stage
                fusions[name] = FastToSlow(out_f, fusion_ratio * out_f, fusion_kernel, alpha)
                cs += fusion_ratio * out_f
        self.slow = nn.ModuleDict(slow_stages)
        self.fast = nn.ModuleDict(fast_stages)
        self.fusions = nn.ModuleDict(fusions)
        self.head = ClassifierHead(cs + cf, num_classes, temporal_pool=temporal_pool, spatial_pool=spatial_pool,
                                   dropout=dropout)
        init_weights(self, zero_init_residual)

    def stage_channels(self, name: str, pathway: str = "slow") -> int:
        """Output channels of stage ``name`` on ``pathway`` (before the lateral concatenation)."""
        channels = self._stage_output(name)
        if pathway not in PATHWAYS:
            raise ValueError(f"pathway must be one of {PATHWAYS}, got {pathway!r}")
        return channels[PATHWAYS.index(pathway)]

    def insert_temporal(self, after: str, slow: nn.Module, fast: nn.Module) -> None:
        """Insert one module per pathway (``forward(x) -> (x, mask)``) after stage ``after``, before its
        lateral connection."""
        self._insert(after, nn.ModuleDict({"slow": slow, "fast": fast}))
        # SGS with temporal_padding="replicate": the temporal convs that feed it (the stages up to `after` and
        # the laterals before it) repeat edge frames instead of padding time with zeros
        from lightning_temporal.models.sgs import replicate_padding_before

        names = list(self.slow)
        upto = names[: names.index(after) + 1]
        replicate_padding_before([self.slow[k] for k in upto] + [self.fusions[k] for k in upto[:-1]], slow)
        replicate_padding_before([self.fast[k] for k in upto], fast)

    def _head_input(self, xs: torch.Tensor, ms: Mask, xf: torch.Tensor, mf: Mask) -> Tuple[torch.Tensor, Mask]:
        """Average the fast features over groups of alpha positions (masked), then merge with the slow ones."""
        n, c, tf, h, w = xf.shape
        a = self.alpha
        g = -(-tf // a)  # ceil
        m = _pad_mask(mf, tf, g * a, n, xf.device).view(n, 1, g, a, 1, 1).to(xf.dtype)
        xg = _pad_time(xf, g * a).view(n, c, g, a, h, w)  # N, Cf, Tf/alpha, alpha, H, W
        cnt = m.sum(dim=3)
        xg = (xg * m).sum(dim=3) / cnt.clamp_min(1)  # N, Cf, Tf/alpha, H, W
        mg = None if mf is None else cnt.view(n, g) > 0
        return merge_time(xs, ms, xg, mg)

    def forward_features(self, x: torch.Tensor) -> Tuple[torch.Tensor, Mask]:
        """``x [N, 3, T, H, W]`` (T a multiple of alpha) -> ``(feat [N, 2304, T/alpha, H/32, W/32], mask)``."""
        if x.dim() != 5 or x.shape[1] != 3:
            raise ValueError(f"expected a clip [N, 3, T, H, W], got shape {tuple(x.shape)}")
        if x.shape[2] % self.alpha:
            raise ValueError(f"SlowFast needs a clip length divisible by alpha={self.alpha}, got T={x.shape[2]}")
        xs, xf = x[:, :, :: self.alpha], x  # slow: N, 3, T/alpha, H, W; fast: N, 3, T, H, W
        ms: Mask = None
        mf: Mask = None
        for name in self.slow:
            xs, ms = run_stage_then(self.slow[name], xs, ms, self._temporal_after(name, "slow"))
            xf, mf = run_stage_then(self.fast[name], xf, mf, self._temporal_after(name, "fast"))
            if name in self.fusions:
                lat, ml = self.fusions[name](xf, mf)
                # the lateral's padded positions are BN + ReLU of zeros: zero them before they sit beside a
                # valid slow position (a sample alone would have the merge's zero padding there)
                xs, ms = merge_time(xs, ms, apply_mask(lat, ml), ml)
        return self._head_input(xs, ms, xf, mf)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [N, 3, T, H, W]`` -> logits ``[N, K]``."""
        return self.head(*self.forward_features(x))


def slowfast_r50(num_classes: int = 400, **kwargs) -> SlowFast:
    """SlowFast 8x8 R50 on a 32-frame clip: 34.57M params, 65.71 GMACs at 32x256x256 (K=400)."""
    return SlowFast(**kwargs, num_classes=num_classes)
