"""The one registry of clip-position policies, and the factory that builds one for a training run.

A policy is named in one of four ways, none of which needs an edit of the package:

* a built-in or registered name (:data:`POLICIES`: ``"tss"``, ``"uniform"``, ``"prior"``, ``"reinforce"``,
  ``"bootstrap"``; :func:`register_policy` adds one);
* a :class:`~lightning_temporal.sampling.policy.SamplingPolicy` subclass, or its import path as a string
  (``"my_lab.policies.GatedPolicy"``);
* a mapping ``{"class_path": ..., "init_args": {...}}`` (what a YAML recipe gives through LightningCLI);
* an instance already built for the run's videos (its ``num_positions`` must be the sampler's).

:func:`build_policy` turns any of them into an instance through ``cls.from_context(context, **init_args)``
(:meth:`SamplingPolicy.from_context`), which fills in what only the training loop knows.

Pure Python and torch: no Lightning.
"""
from __future__ import annotations

import importlib
from typing import Any, Dict, Mapping, Optional, Tuple, Type, Union

import torch

from lightning_temporal.sampling.bootstrap import BootstrapPolicy
from lightning_temporal.sampling.policies import PriorPolicy, ReinforcePolicy, StochasticSoftmaxPolicy, UniformPolicy
from lightning_temporal.sampling.policy import PolicyContext, SamplingPolicy

__all__ = ["POLICIES", "PolicySpec", "register_policy", "policy_class", "policy_name", "build_policy"]

#: the policy class of each name (``StochasticSoftmaxCallback(mode=...)`` / ``policy=...``)
POLICIES: Dict[str, Type[SamplingPolicy]] = {
    "tss": StochasticSoftmaxPolicy,
    "prior": PriorPolicy,
    "reinforce": ReinforcePolicy,
    "uniform": UniformPolicy,
    "bootstrap": BootstrapPolicy,
}

PolicySpec = Union[str, Type[SamplingPolicy], SamplingPolicy, Mapping[str, Any]]


def register_policy(name: str, cls: Type[SamplingPolicy]) -> Type[SamplingPolicy]:
    """Add ``cls`` to :data:`POLICIES` under ``name`` (``ValueError`` if the name is taken by another class)."""
    if not (isinstance(cls, type) and issubclass(cls, SamplingPolicy)):
        raise TypeError(f"register_policy: {cls!r} is not a SamplingPolicy subclass")
    if POLICIES.get(name, cls) is not cls:
        raise ValueError(f"register_policy: the name {name!r} is taken by {POLICIES[name].__name__}")
    POLICIES[name] = cls
    return cls


def _import(path: str) -> Any:
    module, _, attr = path.rpartition(".")
    if not module:
        raise ValueError(f"policy {path!r} is neither a policy name ({sorted(POLICIES)}) nor an import path "
                         "'package.module.ClassName'")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"policy {path!r}: cannot import it ({err}); give a policy name ({sorted(POLICIES)}) or the "
                         "import path of a SamplingPolicy subclass on sys.path") from err


def policy_class(spec: PolicySpec) -> Tuple[Type[SamplingPolicy], Dict[str, Any]]:
    """The class a spec names and its init arguments (``{}`` unless a ``class_path`` mapping gives them).

    Raises ``ValueError`` for an unknown name, an import path that does not import, or a mapping without
    ``class_path``; ``TypeError`` when what it names is not a :class:`SamplingPolicy` subclass.
    """
    init_args: Dict[str, Any] = {}
    target: Any = spec
    if isinstance(spec, Mapping):
        if "class_path" not in spec:
            raise ValueError(f"a policy given as a mapping needs 'class_path' (and optionally 'init_args'), got keys "
                             f"{sorted(spec)}")
        target, init_args = spec["class_path"], dict(spec.get("init_args") or {})
    if isinstance(target, SamplingPolicy):
        return type(target), init_args
    if isinstance(target, str):
        target = POLICIES[target] if target in POLICIES else _import(target)
    if not (isinstance(target, type) and issubclass(target, SamplingPolicy)):
        raise TypeError(f"policy {spec!r} names {target!r}, which is not a SamplingPolicy subclass "
                        "(lightning_temporal.sampling.SamplingPolicy)")
    return target, init_args


def policy_name(spec: PolicySpec) -> str:
    """The name a run's state keeps of its policy: the registered name, else ``module.ClassName``."""
    cls, _ = policy_class(spec)
    if isinstance(spec, str) and spec in POLICIES:
        return spec
    for name, registered in POLICIES.items():
        if registered is cls:
            return name
    return f"{cls.__module__}.{cls.__qualname__}"


def build_policy(spec: PolicySpec, context: PolicyContext, init_args: Optional[Mapping[str, Any]] = None
                 ) -> SamplingPolicy:
    """The policy of ``spec`` for the run of ``context``: ``cls.from_context(context, **init_args)``, or the
    instance itself after checking it was built for these videos (``ValueError`` otherwise).

    ``init_args`` are merged over those of a ``class_path`` mapping.
    """
    if isinstance(spec, SamplingPolicy):
        if init_args:
            raise ValueError("a policy instance takes no init_args: build it with them")
        if not torch.equal(spec.num_positions, context.num_positions):
            raise ValueError(f"the policy instance {spec!r} was built for other videos than the sampler's "
                             f"({spec.num_videos} videos vs {context.num_positions.numel()}, or other clip "
                             "positions): build it from the training manifest's clip positions "
                             "(datamodule.clip_sampler.num_positions), or pass its class")
        return spec
    cls, args = policy_class(spec)
    args.update(init_args or {})
    policy = cls.from_context(context, **args)
    if not isinstance(policy, SamplingPolicy):
        raise TypeError(f"{cls.__name__}.from_context returned {type(policy).__name__}, not a SamplingPolicy")
    return policy
