"""3D CNN backbones (3D ResNet, X3D, SlowFast, a small CPU network), Similarity Guided Sampling, attention."""
from lightning_temporal.models.sgs import SimilarityGuidedSampling
from lightning_temporal.models.attention import DoubleAttention
from lightning_temporal.models.head import ClassifierHead
from lightning_temporal.models.registry import BACKBONES, build_backbone, list_backbones

__all__ = ["SimilarityGuidedSampling", "DoubleAttention", "ClassifierHead", "BACKBONES", "build_backbone",
           "list_backbones"]
