"""Checkpoints (Accelerate state: trainable weights, optimizer, LR schedule, RNG, step, EMA) and trained-weight I/O.

OUT/checkpoints/step-NNNNNNN/   accelerator.save_state + trainable.safetensors (only parameters that train)
OUT/final/                      the export: pytorch_lora_weights.safetensors (LoRA) or transformer/ (full), export.json
A run restarted with the same OUT continues from the latest checkpoint; its per-step randomness is a function of the
step (not of the RNG state), and the data order of (seed, epoch), so it continues exactly.

Under FSDP2 (parameters are DTensor shards) Accelerate writes the model and optimizer itself (sharded or full, per the
launch file's fsdp_state_dict_type); trainable.safetensors, the EMA and the export hold gathered, whole tensors, so
every rank takes part in writing them (all-gathers) and the main process writes the files.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from newtonrewards.errors import UserError

CHECKPOINTS = "checkpoints"
TRAINABLE_FILE = "trainable.safetensors"
EXPORT_FILE = "export.json"


class Progress:
    """The optimizer-step counter, checkpointed with the Accelerate state."""

    def __init__(self) -> None:
        self.step = 0

    def state_dict(self) -> dict:
        return {"step": torch.tensor(self.step)}

    def load_state_dict(self, state: dict) -> None:
        self.step = int(state["step"])


def is_fsdp(accelerator) -> bool:
    return accelerator.distributed_type.value == "FSDP"


def unsharded(tensor: torch.Tensor) -> torch.Tensor:
    """The whole value of a tensor: an FSDP2 shard (DTensor) all-gathered (a collective: every rank must call it in
    the same order), any other tensor as it is."""
    from torch.distributed.tensor import DTensor

    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor


def gathered_trainable(accelerator, model) -> dict[str, torch.Tensor]:
    """{name: whole CPU tensor} of the trainable parameters of a prepared model. Under FSDP every rank must call it
    (it all-gathers the trainable shards only, not the frozen base weights) and only the main process gets them."""
    module = accelerator.unwrap_model(model)
    names = [n for n, p in module.named_parameters() if p.requires_grad]
    if not is_fsdp(accelerator):
        own = dict(module.named_parameters())
        return {n: own[n].detach().cpu().contiguous() for n in names}
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True, ignore_frozen_params=True)
    state = get_model_state_dict(model, options=options)  # {} on the other ranks (cpu_offload: rank 0 only)
    return {n: state[n].contiguous() for n in names if n in state}


def register_hooks(accelerator) -> None:
    """Save / load only the trainable parameters of prepared models (not the frozen base weights). Under FSDP the
    save hook gathers them for trainable.safetensors (what load_trained and the digest read); Accelerate loads the
    sharded model itself and passes the load hook no models."""
    from safetensors.torch import load_file, save_file

    def save_hook(models, weights, output_dir):
        for i, model in enumerate(models):
            state = gathered_trainable(accelerator, model)
            if accelerator.is_main_process:
                save_file(state, str(Path(output_dir) / (TRAINABLE_FILE if i == 0 else f"trainable_{i}.safetensors")))
        weights.clear()

    def load_hook(models, input_dir):
        for i in range(len(models)):
            model = models.pop()
            module = accelerator.unwrap_model(model)
            path = Path(input_dir) / (TRAINABLE_FILE if i == 0 else f"trainable_{i}.safetensors")
            state = load_file(str(path))
            check_trainable_state(path, state, module)
            module.load_state_dict(state, strict=False)

    accelerator.register_save_state_pre_hook(save_hook)
    accelerator.register_load_state_pre_hook(load_hook)


def check_trainable_state(path: Path, state: dict, module) -> None:
    """Refuse trainable weights (trainable.safetensors) whose tensor names are not exactly what `module` trains: its
    LoRA tensors when LoRA is attached, else all its parameters. Loading is `strict=False` (the frozen base weights are
    not in the file), so a checkpoint of the other kind (LoRA vs full) or of other LoRA options would load nothing
    and say nothing."""
    from newtonrewards.train.lora import has_lora

    lora = has_lora(module)
    own = {n for n, _ in module.named_parameters() if ("lora_" in n) == lora}
    missing, unexpected = sorted(own - state.keys()), sorted(state.keys() - own)
    if not missing and not unexpected:
        return
    want, found = ("LoRA" if lora else "full"), ("LoRA" if any("lora_" in k for k in state) else "full")
    if want != found:
        fix = "enable lora with its rank" if found == "LoRA" else "disable lora (lora.enabled=false)"
        raise UserError(f"{path}: holds {found} weights ({len(state)} tensors) but this model expects {want} weights "
                        f"({len(own)} tensors); {fix} to load it")  # fmt: skip
    example = f"lacks e.g. {missing[0]}" if missing else f"has e.g. {unexpected[0]}, which this model lacks"
    raise UserError(f"{path}: {len(state)} {found} tensors where this model expects {len(own)} ({example}); was it "
                    "written with other LoRA options or for another model?")  # fmt: skip


def checkpoint_dirs(out: str | Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    root = Path(out) / CHECKPOINTS
    return sorted(p for p in root.glob("step-*") if (p / TRAINABLE_FILE).exists()) if root.is_dir() else []


def save_checkpoint(accelerator, out: str | Path, step: int, keep: int) -> Path:
    """Write OUT/checkpoints/step-N (all ranks take part); keep only the newest `keep`."""
    path = Path(out) / CHECKPOINTS / f"step-{step:07d}"
    accelerator.save_state(str(path))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process and keep > 0:
        for old in checkpoint_dirs(out)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    return path


def load_trained(adapter, folder: str | Path) -> str:
    """Load trained weights into `adapter`'s denoiser from a train output folder (its final/ or latest checkpoint)
    or an export folder; returns "lora" or "full". A LoRA file needs LoRA already attached (train/lora.add_lora)."""
    from safetensors.torch import load_file

    from newtonrewards.train.lora import LORA_FILE, has_lora

    folder = Path(folder)
    if (folder / "final").is_dir():
        folder = folder / "final"
    elif checkpoint_dirs(folder):
        folder = checkpoint_dirs(folder)[-1]
    module = adapter.trainable_module()
    if (folder / LORA_FILE).exists():
        from peft import set_peft_model_state_dict

        if not has_lora(module):
            raise UserError(f"{folder}: holds LoRA weights; enable lora with the same rank to load them")
        state = {k.removeprefix("transformer."): v for k, v in load_file(str(folder / LORA_FILE)).items()}
        result = set_peft_model_state_dict(module, state, adapter_name="default")
        if getattr(result, "unexpected_keys", None):
            raise UserError(f"{folder / LORA_FILE}: unexpected LoRA tensors (e.g. {result.unexpected_keys[0]})")
        return "lora"
    if (folder / "transformer").is_dir():
        from safetensors.torch import load_file as load

        files = sorted((folder / "transformer").glob("*.safetensors"))
        state = {k: v for f in files for k, v in load(str(f)).items()}
        _load_base_weights(module, state, folder)
        return "full"
    if (folder / TRAINABLE_FILE).exists():
        state = load_file(str(folder / TRAINABLE_FILE))
        check_trainable_state(folder / TRAINABLE_FILE, state, module)
        module.load_state_dict(state, strict=False)
        return "lora" if has_lora(module) else "full"
    raise UserError(f"{folder}: no trained weights here (expected final/, a checkpoint, a LoRA file or transformer/)")


def _load_base_weights(module, state: dict, folder: Path) -> None:
    """Full transformer weights into a module that may carry LoRA layers (base weights sit under `base_layer`)."""
    own = dict(module.named_parameters())
    mapped = {}
    for k, v in state.items():
        if k in own:
            mapped[k] = v
        else:
            alt = k.rsplit(".", 1)[0] + ".base_layer." + k.rsplit(".", 1)[1]
            if alt not in own:
                raise UserError(f"{folder}/transformer: tensor {k} does not fit this model")
            mapped[alt] = v
    module.load_state_dict(mapped, strict=False)


class EMACheckpoint:
    """What the checkpoints hold of an EMA (diffusers' EMAModel over the prepared trainable parameters): its state
    with whole tensors. Under FSDP2 the shadow tensors are shards like the parameters: gathered on save (every rank)
    and re-sharded like the current ones on load; otherwise exactly EMAModel's own state."""

    def __init__(self, ema) -> None:
        self.ema = ema

    def state_dict(self) -> dict:
        return {**self.ema.state_dict(), "shadow_params": [unsharded(t) for t in self.ema.shadow_params]}

    def load_state_dict(self, state: dict) -> None:
        from torch.distributed.tensor import DTensor, distribute_tensor

        like = self.ema.shadow_params
        self.ema.load_state_dict(state)
        loaded = self.ema.shadow_params
        self.ema.shadow_params = [distribute_tensor(t.to(ref.device), ref.device_mesh, ref.placements)
                                  if isinstance(ref, DTensor) else t for t, ref in zip(loaded, like)]  # fmt: skip


def write_export(accelerator, adapter, model, out: str | Path, lora: bool, info: dict) -> Path | None:
    """OUT/final: the plain-pipeline weights plus export.json (base model, adapter, how to load). Every rank calls it
    (under FSDP the weights are gathered: the LoRA tensors only, or `accelerator.get_state_dict` for a full export);
    the main process writes and gets the path, the others None."""
    from newtonrewards.dataset import write_json_atomic
    from newtonrewards.train.lora import export_lora, export_transformer

    state = None
    if is_fsdp(accelerator):
        state = gathered_trainable(accelerator, model) if lora else accelerator.get_state_dict(model)
    if not accelerator.is_main_process:
        return None
    path = Path(out) / "final"
    if path.exists():
        shutil.rmtree(path)
    if state is None:
        adapter.export(path, lora=lora)
    else:  # every adapter's export is one of these two, which take the gathered weights
        (export_lora if lora else export_transformer)(adapter, path, state_dict=state)
    how = ("pipe = PipelineClass.from_pretrained(base_model); pipe.load_lora_weights(this_folder)" if lora else
           "pipe = PipelineClass.from_pretrained(base_model, transformer=TransformerClass.from_pretrained(this_folder, "
           "subfolder='transformer'))")  # fmt: skip
    write_json_atomic(path / EXPORT_FILE, {"adapter": adapter.name, "base_model": str(adapter.model),
                                           "pipeline": adapter.pipeline_class.__name__, "lora": lora, "load": how,
                                           **info})  # fmt: skip
    return path


def read_export_info(folder: str | Path) -> dict:
    path = Path(folder) / EXPORT_FILE
    return json.loads(path.read_text()) if path.exists() else {}
