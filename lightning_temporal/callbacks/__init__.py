"""Lightning callbacks: the Temporal Stochastic Softmax sampler and its sampling-map plots."""
from lightning_temporal.callbacks.stochastic_softmax import SamplingHistory, StochasticSoftmaxCallback
from lightning_temporal.callbacks.sampling_plots import SamplingMapLogger

__all__ = ["StochasticSoftmaxCallback", "SamplingHistory", "SamplingMapLogger"]
