"""Prompt embeddings computed once per (adapter, model, prompt) and stored as safetensors, so the text encoder is
loaded only for prompts missing from the cache and freed right after."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch

from newtonrewards.train.adapters.base import Embeds, collate_embeds


def prompt_key(adapter_name: str, model: str, options: dict, prompt: str) -> str:
    """A stable file name for the embeddings of `prompt` under this adapter, model and text options."""
    text = "\0".join([adapter_name, model, str(sorted(options.items())), prompt])
    return hashlib.sha256(text.encode()).hexdigest()[:32]


class PromptCache:
    """FOLDER/KEY.safetensors, one file per prompt ({name: [...]}, no batch dimension)."""

    def __init__(self, folder: str | Path, adapter):
        self.folder = Path(folder)
        self.adapter = adapter
        text_opts = {k: v for k, v in adapter.options.items() if "sequence" in k}
        self._key = lambda p: prompt_key(adapter.name, str(adapter.model), text_opts, p)

    def path(self, prompt: str) -> Path:
        return self.folder / f"{self._key(prompt)}.safetensors"

    def fill(self, prompts: list[str], batch: int = 8) -> int:
        """Encode and store every prompt not cached yet; free the text encoder after. Returns how many were new."""
        from safetensors.torch import save_file

        missing = sorted({p for p in prompts if not self.path(p).exists()})
        self.folder.mkdir(parents=True, exist_ok=True)
        for start in range(0, len(missing), batch):
            chunk = missing[start : start + batch]
            embeds = self.adapter.encode_prompts(chunk)
            for i, prompt in enumerate(chunk):
                path = self.path(prompt)
                tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
                save_file({k: v[i].contiguous() for k, v in embeds.items()}, str(tmp), metadata={"prompt": prompt})
                os.replace(tmp, path)
        self.adapter.free_text_encoder()
        return len(missing)

    def load(self, prompts: list[str]) -> Embeds:
        """Batch dict {name: [B, ...]} of cached prompts (fill first)."""
        from safetensors.torch import load_file

        return collate_embeds([{k: v[None] for k, v in load_file(str(self.path(p))).items()} for p in prompts])


def to_device(embeds: Embeds, device: torch.device) -> Embeds:
    return {k: v.to(device) for k, v in embeds.items()}
