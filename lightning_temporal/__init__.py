"""lightning_temporal: train 3D CNN video classifiers efficiently along time with PyTorch Lightning.

Temporal Stochastic Softmax (clip sampling from learned per-video score tables, softmax temporal pooling)
and Similarity Guided Sampling (backbones whose temporal resolution adapts to each clip).
"""
from lightning_temporal.pooling import lengths_to_mask, softmax_temporal_pool
from lightning_temporal.metrics import EERAccuracy, MeanClassAccuracy, classification_metrics, eer_accuracy
from lightning_temporal.callbacks import (PredictionWriter, SamplingHistory, SamplingMapLogger, SGSFeatureMapLogger,
                                         StochasticSoftmaxCallback)
from lightning_temporal.datamodule import TemporalDataModule
from lightning_temporal.module import VideoClassifier
from lightning_temporal.models import build_backbone, SimilarityGuidedSampling
from lightning_temporal.flops import count_gmacs

__version__ = "0.1.0"

__all__ = [
    "StochasticSoftmaxCallback",
    "SamplingMapLogger",
    "SamplingHistory",
    "SGSFeatureMapLogger",
    "PredictionWriter",
    "build_backbone",
    "SimilarityGuidedSampling",
    "count_gmacs",
    "TemporalDataModule",
    "VideoClassifier",
    "softmax_temporal_pool",
    "lengths_to_mask",
    "EERAccuracy",
    "MeanClassAccuracy",
    "classification_metrics",
    "eer_accuracy",
]
