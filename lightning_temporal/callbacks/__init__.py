"""Lightning callbacks: the Temporal Stochastic Softmax sampler and the figures of both methods."""
from lightning_temporal.callbacks.stochastic_softmax import SamplingHistory, StochasticSoftmaxCallback
from lightning_temporal.callbacks.sampling_plots import SamplingMapLogger
from lightning_temporal.callbacks.sgs_plots import SGSFeatureMapLogger
from lightning_temporal.callbacks.prediction_writer import PredictionWriter

__all__ = ["StochasticSoftmaxCallback", "SamplingHistory", "SamplingMapLogger", "SGSFeatureMapLogger",
           "PredictionWriter"]
