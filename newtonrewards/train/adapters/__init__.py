"""Registry of video-model adapters (see base.py for the contract): real models load with `from_pretrained` from a
hub id or folder; `tiny-*` build small random-weight models (saved, then loaded through the same path) for tests."""

from __future__ import annotations

from typing import Any

from newtonrewards.errors import UserError
from newtonrewards.registry import build_backend

ADAPTERS = {
    "wan": "newtonrewards.train.adapters.wan:WanAdapter",
    "tiny-wan": "newtonrewards.train.adapters.wan:TinyWanAdapter",
    "ltx": "newtonrewards.train.adapters.ltx:LTXAdapter",
    "tiny-ltx": "newtonrewards.train.adapters.ltx:TinyLTXAdapter",
    "cogvideox": "newtonrewards.train.adapters.cogvideox:CogVideoXAdapter",
    "tiny-cogvideox": "newtonrewards.train.adapters.cogvideox:TinyCogVideoXAdapter",
}


def adapter_class(name: str) -> type:
    """The adapter class registered as `name` (imports only its module); unknown names list the known ones."""
    import importlib

    if name not in ADAPTERS:
        raise UserError(f"unknown adapter {name!r}; known: {', '.join(ADAPTERS)}")
    module, cls = ADAPTERS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def make_adapter(name: str, **kwargs: Any):
    """Build the adapter registered as `name` (model=hub id or folder, dtype, device, options)."""
    if name not in ADAPTERS:
        raise UserError(f"unknown adapter {name!r}; known: {', '.join(ADAPTERS)}")
    return build_backend(ADAPTERS, "adapter", name, **kwargs)
