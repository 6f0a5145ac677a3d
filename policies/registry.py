"""The policy registry: ``@register_policy("mlp", MLPConfig)`` on a model, ``make_policy(cfg)``
builds it.

The decorator sits on the model, which imports its config, so a config never imports its model
and the two files point one way."""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from torch import nn

from policies.images import CameraInput

_POLICIES: dict[str, tuple[type, Callable[[Any], nn.Module]]] = {}
# Modules that register policies when imported; the registry imports them on first use.
_BUILTIN = ("policies.mlp", "policies.act")


def register_policy(name: str, config_cls: type):
    """Class decorator for a policy model: ``@register_policy("mlp", MLPConfig)``; the model
    is built as ``model(config)``."""

    def decorate(model: Callable[[Any], nn.Module]) -> Callable[[Any], nn.Module]:
        if name in _POLICIES:
            raise ValueError(f"policy {name!r} is registered twice")
        config_cls.policy_name = name
        _POLICIES[name] = (config_cls, model)
        return model

    return decorate


def check_common_fields(config: Any) -> None:
    """What every policy config shares: dimensions, the task vocabulary, hidden widths."""
    if config.state_dim < 1 or config.action_dim < 1:
        raise ValueError("state_dim and action_dim must be positive")
    if not config.tasks or len(set(config.tasks)) != len(config.tasks):
        raise ValueError(f"tasks must be non-empty and unique, got {config.tasks}")
    if not config.hidden or min(config.hidden) < 1:
        raise ValueError(f"hidden widths must be positive, got {config.hidden}")


def _load_builtins() -> None:
    for module in _BUILTIN:
        importlib.import_module(module)


def available_policies() -> list[str]:
    _load_builtins()
    return sorted(_POLICIES)


def _entry(name: str) -> tuple[type, Callable[[Any], nn.Module]]:
    _load_builtins()
    if name not in _POLICIES:
        close = difflib.get_close_matches(name, _POLICIES, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown policy {name!r} (known: {', '.join(sorted(_POLICIES))}){hint}")
    return _POLICIES[name]


def config_class(name: str) -> type:
    return _entry(name)[0]


def make_policy(config: Any) -> nn.Module:
    """The one constructor of policies that flows and services use."""
    return _entry(config.policy_name)[1](config)


def config_to_dict(config: Any) -> dict[str, Any]:
    return {"policy": config.policy_name, **asdict(config)}


def config_from_dict(data: dict[str, Any]) -> Any:
    """A config from its JSON; fields it lacks (a checkpoint older than them) take their
    defaults, so a config.json written before cameras existed loads as a state policy."""
    fields = dict(data)
    cls = config_class(fields.pop("policy"))
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()}
    if "cameras" in fields:
        fields["cameras"] = tuple(CameraInput.from_dict(c) for c in fields["cameras"])
    return cls(**fields)
