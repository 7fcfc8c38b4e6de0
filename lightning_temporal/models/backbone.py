"""Shared plumbing of the staged backbones: named stages, a temporal module (SGS / attention) after one of
them, and the validity mask that follows the features through the later stages.

After SGS the samples of a batch have different numbers of temporal positions (B'); each is padded with zero
bins at the end. The mask keeps every later layer from letting the padding change a real sample's result
(eval mode): padded positions are re-zeroed after every block and inside blocks before a temporal conv or a
pool over time, so that a sample's logits do not depend on what it is batched with. Where BatchNorm runs on
running statistics, :class:`StagedBackbone` also splits the batch by B' (:func:`plan_bin_groups`) so that the
later stages do not spend time on the padding.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from lightning_temporal.models.head import ClassifierHead
from lightning_temporal.models.sgs import replicate_padding_before


def init_weights(module: nn.Module, zero_init_residual: bool = True) -> None:
    """Kaiming (fan_out) convs, BatchNorm weight 1 / bias 0, small-normal linears; optionally zero the
    last BatchNorm of each residual branch (blocks mark it as ``last_bn``) so residual blocks start as
    identities."""
    for m in module.modules():
        if isinstance(m, nn.Conv3d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm3d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.01)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    if zero_init_residual:
        for m in module.modules():
            bn = getattr(m, "last_bn", None)
            if isinstance(bn, nn.BatchNorm3d):
                nn.init.zeros_(bn.weight)


def apply_mask(x: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
    """Zero the padded temporal positions of ``x [N, C, T, H, W]`` (``mask [N, T]``; None: nothing to do)."""
    if mask is None:
        return x
    return x * mask[:, None, :, None, None].to(x.dtype)


def _run_block(block: nn.Module, x: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
    # blocks with a temporal conv that does not read the block input (or a pool over time) take the mask
    return block(x, mask) if getattr(block, "takes_mask", False) else block(x)


def run_stage(
    stage: nn.Module, x: torch.Tensor, mask: Optional[torch.Tensor], pre_activation: bool = False
) -> Tuple[torch.Tensor, Optional[torch.Tensor], Optional[nn.Module]]:
    """Run ``stage`` block by block; after SGS (``mask [N, T]`` not None) re-zero padded positions after every
    block. Returns ``(x, mask, activation)``.

    Why re-zero: after BatchNorm a padded (zero) bin is no longer zero, and a temporal conv would leak it into
    the last valid bin of a sample. With every temporal conv reading zeros past a sample's valid bins (blocks
    that have a temporal conv not reading the block input, or a pool over time, take the mask: ``takes_mask``)
    a sample's result is that of running it alone: the zeros are what the conv's own zero padding gives. A
    block with temporal stride s (attribute ``temporal_stride``; 'same' padding) keeps positions
    ``0, s, 2s, ...``, so the mask is strided the same way.

    ``pre_activation``: stop before the final ReLU of the last block (``forward_pre_activation``) or of a
    stage that ends in an ``nn.ReLU`` and return that ReLU as ``activation``, for a module that must read the
    stage's output before it (the released SGS placement). Where the stage does not end in a ReLU,
    ``activation`` is None and the stage ran whole.
    """
    blocks = list(stage) if isinstance(stage, nn.Sequential) else [stage]
    activation: Optional[nn.Module] = None
    for i, block in enumerate(blocks):
        last = i == len(blocks) - 1
        if last and pre_activation and isinstance(block, nn.ReLU):
            activation = block
            break
        if last and pre_activation and hasattr(block, "forward_pre_activation"):
            x = block.forward_pre_activation(x, mask)
            activation = block.relu
        else:
            x = _run_block(block, x, mask)
        if mask is None:
            continue
        s = getattr(block, "temporal_stride", 1)
        if s != 1:
            mask = mask[:, ::s]
        if mask.shape[1] != x.shape[2]:
            raise RuntimeError(
                f"mask of {mask.shape[1]} positions does not match {x.shape[2]} temporal positions after "
                f"{type(block).__name__}; give the block a `temporal_stride` attribute"
            )
        x = apply_mask(x, mask)
    return x, mask, activation


def run_stage_then(
    stage: nn.Module, x: torch.Tensor, mask: Optional[torch.Tensor], temporal: Optional[nn.Module] = None
) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """One stage of a forward pass -> ``(x, mask)``: the stage whole while no temporal module has run yet
    (``mask`` None, no ``temporal``), else block by block under the mask (:func:`run_stage`), followed by
    ``temporal`` (``forward(x) -> (x, mask)``) when given. With ``temporal.pre_activation`` (SGS's released
    placement) the temporal module reads the stage's output before its final ReLU and the ReLU runs on the
    temporal module's output."""
    if temporal is None and mask is None:
        return stage(x), None
    x, mask, act = run_stage(stage, x, mask, pre_activation=getattr(temporal, "pre_activation", False))
    if temporal is not None:
        x, mask = temporal(x)
        if act is not None:
            x = act(x)
    return x, mask


class TemporalInsertion(nn.Module):
    """Named stages with known output channels, and a temporal module inserted after one of them.

    The one place that checks where a temporal module (SGS, attention) may go, for single-pathway
    (:class:`StagedBackbone`) and two-pathway (``SlowFast``, one module per pathway) networks. Subclasses fill
    ``self.stage_out`` (stage name -> what the stage outputs, e.g. its channels, in forward order) and call
    :meth:`_insert`; ``self.temporal`` / ``self.temporal_after`` then say what runs after which stage.
    """

    def __init__(self) -> None:
        super().__init__()
        self.stage_out: Dict[str, Any] = {}
        self.temporal: Optional[nn.Module] = None
        self.temporal_after: Optional[str] = None

    def _stage_output(self, name: str) -> Any:
        if name not in self.stage_out:
            raise ValueError(f"unknown stage {name!r}; {type(self).__name__} has stages {list(self.stage_out)}")
        return self.stage_out[name]

    def _insert(self, after: str, module: nn.Module) -> None:
        self._stage_output(after)  # validates the name
        if after == list(self.stage_out)[-1]:
            raise ValueError(f"cannot insert after the last stage {after!r}: nothing would run on its output")
        self.temporal = module
        self.temporal_after = after

    def _temporal_after(self, name: str, pathway: Optional[str] = None) -> Optional[nn.Module]:
        """The temporal module that runs after stage ``name`` (that of ``pathway`` when there is one per
        pathway), or None."""
        if name != self.temporal_after:
            return None
        return self.temporal if pathway is None else self.temporal[pathway]


def plan_bin_groups(counts: torch.Tensor, overhead: float = 1.0) -> Tuple[List[torch.Tensor], List[int]]:
    """Split a batch into groups of clips that run the stages after SGS together, each at its own B'.

    ``counts [N]`` (int): B' of each clip. Clips are sorted by B' and cut into runs of neighbouring B' values; a
    run runs at its largest B' (the others are padded and masked). The runs minimise ``sum over runs of
    (clips in the run x its largest B') + overhead x (number of runs)``, exactly, by dynamic programming over the
    distinct B' values (at most ``min(N, B)`` of them; the loop is over those values, not over clips).
    ``overhead`` is the cost of one more forward call, in clip-positions: 0 gives one group per distinct B',
    a large value one group (the ungrouped batch).

    Returns ``(indices, lengths)``: for each run, the batch indices of its clips (``int64 [n_g]``, ascending
    B') and the B' it runs at.
    """
    if counts.dim() != 1 or counts.numel() == 0:
        raise ValueError(f"counts must be a non-empty [N] tensor of B' values, got shape {tuple(counts.shape)}")
    if not overhead >= 0:
        raise ValueError(f"overhead must be >= 0 clip-positions, got {overhead!r}")
    order = torch.argsort(counts, stable=True)
    values, sizes = torch.unique_consecutive(counts[order], return_counts=True)
    values, sizes = values.tolist(), sizes.tolist()
    k = len(values)
    # best[j]: least cost of the first j distinct values; cut[j]: where the last run starts
    best, cut = [0.0] + [float("inf")] * k, [0] * (k + 1)
    for j in range(1, k + 1):  # over distinct B' values (<= B), never over clips
        clips = 0
        for i in range(j - 1, -1, -1):
            clips += sizes[i]
            cost = best[i] + clips * values[j - 1] + overhead
            if cost <= best[j]:  # ties: the longer run, fewer calls
                best[j], cut[j] = cost, i
    runs: List[Tuple[int, int]] = []
    j = k
    while j > 0:
        runs.append((cut[j], j))
        j = cut[j]
    runs.reverse()
    group_sizes = [sum(sizes[i:j]) for i, j in runs]
    return list(torch.split(order, group_sizes)), [int(values[j - 1]) for _, j in runs]


def _uses_batch_statistics(modules) -> bool:
    """True if a normalisation layer among ``modules`` normalises with the batch's statistics (training mode,
    or no running statistics): then the batch cannot be split without changing the result."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) and (m.training or m.running_mean is None)
               for mod in modules for m in mod.modules())


def _is_prefix(mask: torch.Tensor, counts: torch.Tensor) -> bool:
    """True if each clip's valid positions are its first ``counts`` ones (SGS puts the kept bins first)."""
    return bool(torch.equal(mask, torch.arange(mask.shape[1], device=mask.device) < counts[:, None]))


class StagedBackbone(TemporalInsertion):
    """A sequence of named stages (``stem``, ``res2`` ...) and a :class:`ClassifierHead`.

    Subclasses fill ``self.stages`` (an ``nn.ModuleDict`` in forward order), ``self.stage_out`` (channels
    after each stage) and ``self.head``. ``insert_temporal(after, module)`` puts a module with
    ``forward(x) -> (x, mask)`` after a stage; the later stages then run on its output.

    Grouping by B' (``group_bins``, default True). After SGS the clips of a batch keep different numbers of
    bins B'; run as one padded batch, every clip would cost the batch's largest B' in the later stages. Where
    grouping applies, the batch is split by B' (:func:`plan_bin_groups`; ``group_overhead`` is the cost of one
    more forward call in clip-positions) and each group runs the later stages at its own B'; the features come
    back in batch order, zero-padded to the longest, with the mask. A clip's result is the same as in the padded
    batch (the mask already makes every clip independent of its batch; ``tests/test_sgs_grouping.py`` compares
    the logits), so the switch only changes time. It applies when every normalisation layer of the later
    stages uses running statistics (eval mode, or BatchNorm frozen): in training, BatchNorm normalises with the
    statistics of the whole padded batch, which per-group batches would change, so training runs ungrouped.
    Set ``model.group_bins = False`` to always run the padded batch.
    """

    stages: nn.ModuleDict
    head: ClassifierHead
    #: run the stages after SGS on groups of clips of equal B' (eval / frozen BatchNorm); see the class docstring
    group_bins: bool = True
    #: cost of one more group's forward call, in clip-positions (see :func:`plan_bin_groups`)
    group_overhead: float = 1.0

    def stage_channels(self, name: str) -> int:
        """Channels of the output of stage ``name``."""
        return self._stage_output(name)

    def insert_temporal(self, after: str, module: nn.Module) -> None:
        """Insert ``module`` (``forward(x) -> (x, mask)``) after stage ``after``; for SGS with
        ``temporal_padding="replicate"`` (its default) the temporal convs of the stages up to ``after`` then pad
        time by repeating edge frames (``replicate_time_padding``), so that a static clip reaches SGS static."""
        self._insert(after, module)
        names = list(self.stages)
        replicate_padding_before([self.stages[k] for k in names[: names.index(after) + 1]], module)

    def forward_features(self, x: torch.Tensor) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """``x [N, 3, T, H, W]`` -> ``(feat [N, C, T', H', W'], mask [N, T'] bool or None)``."""
        if x.dim() != 5 or x.shape[1] != 3:
            raise ValueError(f"expected a clip [N, 3, T, H, W], got shape {tuple(x.shape)}")
        mask: Optional[torch.Tensor] = None
        names = list(self.stages)
        for i, name in enumerate(names):
            x, mask = run_stage_then(self.stages[name], x, mask, self._temporal_after(name))
            rest = [self.stages[n] for n in names[i + 1:]]
            if mask is not None and rest and self.group_bins and not _uses_batch_statistics(rest):
                counts = mask.sum(dim=1)
                if _is_prefix(mask, counts):
                    return self._run_grouped(rest, x, mask, counts)
        return x, mask

    def _run_grouped(self, stages, x: torch.Tensor, mask: torch.Tensor,
                     counts: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Run ``stages`` on the groups of :func:`plan_bin_groups`, each cut to its own B', then put the clips
        back in batch order, padded with zeros to the longest output (``mask`` marks the valid positions)."""
        indices, lengths = plan_bin_groups(counts, self.group_overhead)
        feats, masks = [], []
        for idx, length in zip(indices, lengths):  # over groups of distinct B' (<= min(N, B)), not clips
            xg = x[:, :, :length].index_select(0, idx)  # n_g, C, B'_g, H, W
            mg: Optional[torch.Tensor] = mask[:, :length].index_select(0, idx)
            if bool(mg.all()):
                mg = None  # every clip of the group has B'_g bins: no padding, the stages run whole
            for stage in stages:
                xg, mg = run_stage_then(stage, xg, mg)
            feats.append(xg)
            masks.append(mg if mg is not None else torch.ones(xg.shape[0], xg.shape[2], dtype=torch.bool,
                                                               device=xg.device))
        longest = max(f.shape[2] for f in feats)
        feat = torch.cat([F.pad(f, (0, 0, 0, 0, 0, longest - f.shape[2])) for f in feats])
        out_mask = torch.cat([F.pad(m, (0, longest - m.shape[1]), value=False) for m in masks])
        back = torch.argsort(torch.cat(indices))  # sorted position of each clip of the batch
        return feat.index_select(0, back), out_mask.index_select(0, back)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [N, 3, T, H, W]`` -> logits ``[N, K]``."""
        feat, mask = self.forward_features(x)
        return self.head(feat, mask)


def _forced_bins(count: int):
    """A stand-in for SGS's bin compaction that keeps exactly ``count`` bins per clip (rows that stay distinct
    after normalisation, so no bins merge): a counting run then costs what a clip with B' = count costs."""

    def compact(weights: torch.Tensor, keep: Optional[torch.Tensor] = None):
        m, _, t = weights.shape
        i = torch.arange(count, device=weights.device)
        rows = F.one_hot(i % t, t) + (i // t).clamp(max=1)[:, None] * F.one_hot((i + 1) % t, t)
        rows = rows.to(weights.dtype).expand(m, count, t)
        mask = torch.ones(m, count, dtype=torch.bool, device=weights.device)
        return rows, mask, torch.full((m,), count, dtype=torch.long, device=weights.device)

    return compact


def gmacs_by_bins(model: nn.Module, clip_shape: Tuple[int, ...]) -> Tuple[torch.Tensor, float]:
    """GMACs per clip of ``model`` as a function of the B' its SGS layer keeps, and without SGS.

    ``model``: a :class:`StagedBackbone` whose temporal module is one ``SimilarityGuidedSampling`` layer
    without temporal blocks. ``clip_shape``: ``(C, T, H, W)`` of one clip (or ``(N, C, T, H, W)``).

    Returns ``(table, base)``: ``table [B + 1]`` float64 with ``table[b]`` the GMACs of one clip whose SGS
    keeps b bins (``table[0]`` is NaN; B is the layer's ``num_bins`` or the temporal size at its input, and
    b runs up to ``min(B, 2 T_in)``, beyond which no assignment reaches), counted as
    :func:`lightning_temporal.flops.gmacs_per_clip` counts a clip run alone (``table[B'] ==
    gmacs_per_clip(model, clip)`` for a clip keeping B' bins); ``base`` is the GMACs of the same backbone with
    the SGS layer removed. Each entry is one counting run of a zero clip with the layer's compaction replaced by
    one that keeps exactly b bins: B + 2 forward passes of one clip, in eval mode without gradients.

    Raises:
        ValueError: a model that is not a :class:`StagedBackbone` with one such layer.
    """
    from lightning_temporal.flops import count_gmacs
    from lightning_temporal.models.sgs import SimilarityGuidedSampling

    sgs = getattr(model, "temporal", None)
    if not isinstance(model, StagedBackbone) or not isinstance(sgs, SimilarityGuidedSampling):
        raise ValueError(f"gmacs_by_bins needs a StagedBackbone with a SimilarityGuidedSampling layer, got "
                         f"{type(model).__name__} with temporal module {type(sgs).__name__}")
    clip = torch.zeros((1, *clip_shape[-4:]), device=next(model.parameters()).device)
    seen = {}
    handle = sgs.register_forward_pre_hook(lambda m, inp: seen.update(t=inp[0].shape[2]))
    try:
        count_gmacs(model, clip)  # records the temporal size at the layer's input
    finally:
        handle.remove()
    t_in = seen["t"]
    if sgs.block_size is not None and sgs.block_size != t_in:
        raise ValueError(f"gmacs_by_bins: the SGS layer works on blocks of {sgs.block_size} of {t_in} positions; "
                         "its cost is not a function of the clip's B' alone")
    top = min(sgs.num_bins or t_in, 2 * t_in)
    table = torch.full((top + 1,), float("nan"), dtype=torch.float64)
    try:
        for b in range(1, top + 1):  # one counting run per possible B' (at most 2 T), not per clip
            sgs.drop_empty_bins = _forced_bins(b)
            table[b] = count_gmacs(model, clip)
    finally:
        del sgs.drop_empty_bins  # back to the class's compaction
    model.temporal = None
    try:
        base = count_gmacs(model, clip)
    finally:
        model.temporal = sgs
    return table, base
