"""The one mechanism behind every pluggable family (simulators, renderers, flow models, encoders)."""

from __future__ import annotations

import importlib
from typing import Any


def build_backend(backends: dict[str, str], family: str, name: str, **kwargs: Any) -> Any:
    """Import the class registered as `name` ("module:Class") only now, and build it; an unknown name lists the known."""
    if name not in backends:
        raise ValueError(f"unknown {family} {name!r}; known: {', '.join(backends)}")
    module, cls = backends[name].split(":")
    return getattr(importlib.import_module(module), cls)(**kwargs)
