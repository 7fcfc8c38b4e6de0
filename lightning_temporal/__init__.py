"""lightning_temporal: train 3D CNN video classifiers efficiently along time with PyTorch Lightning."""
__version__ = "0.1.0"
