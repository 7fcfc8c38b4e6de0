"""lightning_temporal: train 3D CNN video classifiers efficiently along time with PyTorch Lightning.

Temporal Stochastic Softmax (clip sampling from learned per-video score tables, softmax temporal pooling)
and Similarity Guided Sampling (backbones whose temporal resolution adapts to each clip).

The names below are imported on first use (PEP 562), so that ``import lightning_temporal.sampling`` (or
``.models``, ``.data``, ``.pooling``) loads the pure math and I/O without Lightning.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS = {
    "StochasticSoftmaxCallback": "lightning_temporal.callbacks.stochastic_softmax",
    "SamplingHistory": "lightning_temporal.callbacks.stochastic_softmax",
    "SamplingMapLogger": "lightning_temporal.callbacks.sampling_plots",
    "SGSFeatureMapLogger": "lightning_temporal.callbacks.sgs_plots",
    "PredictionWriter": "lightning_temporal.callbacks.prediction_writer",
    "build_backbone": "lightning_temporal.models.registry",
    "SimilarityGuidedSampling": "lightning_temporal.models.sgs",
    "count_gmacs": "lightning_temporal.flops",
    "TemporalDataModule": "lightning_temporal.datamodule",
    "VideoClassifier": "lightning_temporal.module",
    "softmax_temporal_pool": "lightning_temporal.pooling",
    "lengths_to_mask": "lightning_temporal.pooling",
    "EERAccuracy": "lightning_temporal.metrics",
    "MeanClassAccuracy": "lightning_temporal.metrics",
    "classification_metrics": "lightning_temporal.metrics",
    "eer_accuracy": "lightning_temporal.metrics",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'lightning_temporal' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # what static checkers and IDEs see
    from lightning_temporal.callbacks.prediction_writer import PredictionWriter
    from lightning_temporal.callbacks.sampling_plots import SamplingMapLogger
    from lightning_temporal.callbacks.sgs_plots import SGSFeatureMapLogger
    from lightning_temporal.callbacks.stochastic_softmax import SamplingHistory, StochasticSoftmaxCallback
    from lightning_temporal.datamodule import TemporalDataModule
    from lightning_temporal.flops import count_gmacs
    from lightning_temporal.metrics import EERAccuracy, MeanClassAccuracy, classification_metrics, eer_accuracy
    from lightning_temporal.models.registry import build_backbone
    from lightning_temporal.models.sgs import SimilarityGuidedSampling
    from lightning_temporal.module import VideoClassifier
    from lightning_temporal.pooling import lengths_to_mask, softmax_temporal_pool
