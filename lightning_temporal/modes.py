"""``eval_mode``: run a block with a model in eval mode and give every submodule its own train/eval flag back.

``model.train()`` after the block would switch on submodules that a user keeps frozen in eval mode (a
BatchNorm with fixed statistics, a frozen backbone): each submodule's flag is saved and restored instead.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

from torch import nn

__all__ = ["eval_mode"]


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Inside the block ``model`` and all its submodules are in eval mode (dropout off, BatchNorm on its running
    statistics); afterwards each submodule has the train/eval flag it had before, also when the block raised.

    Example:
        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.Dropout(0.5), torch.nn.BatchNorm1d(2))
        >>> _ = net[1].eval()                       # kept frozen by the user
        >>> with eval_mode(net):
        ...     [m.training for m in net.modules()]
        [False, False, False]
        >>> [m.training for m in net.modules()]
        [True, True, False]

    It does not switch off gradients: combine it with ``torch.no_grad()`` where none are needed.
    """
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, was_training in modes:
            m.training = was_training
