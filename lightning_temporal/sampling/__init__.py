"""Temporal Stochastic Softmax, the pure part: score tables, phases, clip-position policies, the clip sampler.

No Lightning and no I/O here: ``import lightning_temporal.sampling`` loads torch only. The layers, from the
bottom: :mod:`.segments` (pure kernels over ragged per-video vectors), :mod:`.records` (scored clips),
:mod:`.table` (:class:`ScoreTable`), :mod:`.phases`, :mod:`.policy` (the :class:`SamplingPolicy` contract),
:mod:`.policies` (uniform, TSS, prior, REINFORCE), :mod:`.bootstrap` (:class:`BootstrapPolicy`), :mod:`.registry` (the
policy names and the factory) and :mod:`.sampler` (:class:`ClipSampler`, :class:`ClipLoader`).
"""
from lightning_temporal.sampling.table import ScoreTable
from lightning_temporal.sampling.phases import (
    PHASE_CODES,
    Phase,
    PhaseSchedule,
    exploration_radius,
    exploration_starts,
)
from lightning_temporal.sampling.records import ClipRecords
from lightning_temporal.sampling.policy import PolicyContext, SamplingPolicy
from lightning_temporal.sampling.policies import PriorPolicy, ReinforcePolicy, StochasticSoftmaxPolicy, UniformPolicy
from lightning_temporal.sampling.bootstrap import BootstrapPolicy
from lightning_temporal.sampling.registry import POLICIES, build_policy, register_policy
from lightning_temporal.sampling.sampler import ClipLoader, ClipSampler, clip_seeds

__all__ = [
    "ScoreTable", "Phase", "PHASE_CODES", "PhaseSchedule", "exploration_radius", "exploration_starts",
    "SamplingPolicy", "PolicyContext", "ClipRecords", "UniformPolicy", "StochasticSoftmaxPolicy", "PriorPolicy",
    "ReinforcePolicy", "BootstrapPolicy", "POLICIES", "build_policy", "register_policy", "ClipSampler",
    "ClipLoader", "clip_seeds",
]
