"""LoRA on the adapter's denoiser (peft, through diffusers' `add_adapter`) and export of trained weights in the
formats the plain diffusers pipeline loads: its LoRA file (`pipe.load_lora_weights`) or a transformer folder."""

from __future__ import annotations

from pathlib import Path

from torch import nn

LORA_FILE = "pytorch_lora_weights.safetensors"  # diffusers' default name for `save_lora_weights`


def add_lora(module: nn.Module, rank: int, alpha: float, targets: tuple[str, ...] | list[str]) -> None:
    """Freeze `module` and attach trainable LoRA matrices (rank, alpha) to the named linear layers."""
    from peft import LoraConfig

    module.requires_grad_(False)
    config = LoraConfig(r=rank, lora_alpha=alpha, init_lora_weights=True, target_modules=list(targets))
    module.add_adapter(config)


def has_lora(module: nn.Module) -> bool:
    """Whether peft LoRA layers are attached."""
    return bool(getattr(module, "peft_config", None))


def trainable_parameters(module: nn.Module) -> dict[str, nn.Parameter]:
    """{name: parameter} of everything the optimizer updates."""
    return {n: p for n, p in module.named_parameters() if p.requires_grad}


def export_lora(adapter, path: str | Path, state_dict: dict | None = None) -> Path:
    """path/pytorch_lora_weights.safetensors in diffusers' format, with rank and alpha as metadata; the LoRA tensors
    come from `state_dict` when given (whole tensors gathered from FSDP shards), else from the module."""
    from peft.utils import get_peft_model_state_dict

    module = adapter.trainable_module()
    state = get_peft_model_state_dict(module, state_dict=state_dict)
    metadata = module.peft_config["default"].to_dict()
    metadata["target_modules"] = sorted(metadata["target_modules"])
    adapter.pipeline_class.save_lora_weights(
        str(path), transformer_lora_layers=state, safe_serialization=True, transformer_lora_adapter_metadata=metadata
    )
    return Path(path) / LORA_FILE


def export_transformer(adapter, path: str | Path, state_dict: dict | None = None) -> Path:
    """path/transformer/ (config + safetensors) of the fully trained denoiser, for `from_pretrained(subfolder=...)`.
    With `state_dict` (whole tensors gathered from FSDP shards) a plain model of the denoiser's own class (FSDP2
    renames it FSDP<Class>) is built on the meta device around those tensors and saved."""
    import torch
    from torch.distributed.fsdp import FSDPModule

    out = Path(path) / "transformer"
    module = adapter.trainable_module()
    if state_dict is not None:
        plain_class = next(c for c in type(module).__mro__ if not issubclass(c, FSDPModule))
        with torch.device("meta"):
            plain = plain_class.from_config(module.config)
        plain.load_state_dict(state_dict, strict=True, assign=True)
        module = plain
    module.save_pretrained(str(out), safe_serialization=True)
    return out


def lora_file_options(folder: str | Path) -> tuple[int, float, list[str]]:
    """(rank, alpha, target module names) of the LoRA file under `folder`, from the metadata diffusers writes."""
    import json

    from safetensors import safe_open

    path = Path(folder) / LORA_FILE
    with safe_open(str(path), "pt") as f:
        meta = json.loads((f.metadata() or {}).get("lora_adapter_metadata", "{}"))
        rank = int(f.get_slice(next(k for k in f.keys() if "lora_A" in k)).get_shape()[0])
    return int(meta.get("r", rank)), float(meta.get("lora_alpha", rank)), sorted(meta.get("target_modules", []))


def find_lora_folder(folder: str | Path) -> Path | None:
    """The folder holding a LoRA file: `folder`, its final/ or None."""
    for candidate in (Path(folder), Path(folder) / "final"):
        if (candidate / LORA_FILE).exists():
            return candidate
    return None
