"""Temporal Stochastic Softmax, the pure part: score tables, phases, clip-position policies, the clip sampler."""
from lightning_temporal.sampling.table import ScoreTable
from lightning_temporal.sampling.phases import Phase, PhaseSchedule, exploration_radius, exploration_starts
from lightning_temporal.sampling.policies import PriorPolicy, ReinforcePolicy, StochasticSoftmaxPolicy, UniformPolicy
from lightning_temporal.sampling.sampler import ClipLoader, ClipSampler, clip_seeds

__all__ = [
    "ScoreTable", "Phase", "PhaseSchedule", "exploration_radius", "exploration_starts",
    "UniformPolicy", "StochasticSoftmaxPolicy", "PriorPolicy", "ReinforcePolicy", "ClipSampler", "ClipLoader",
    "clip_seeds",
]
