"""Tiny offline text side for the `tiny-*` adapters: a character-level tokenizer and a small random T5 encoder.

The real models' tokenizers come from the hub; tests have no network, so the tokenizer is built with the `tokenizers`
library and wrapped in `PreTrainedTokenizerFast`, which `save_pretrained` / `AutoTokenizer.from_pretrained` round-trip.
"""

from __future__ import annotations

import torch

TINY_CHARS = " abcdefghijklmnopqrstuvwxyz0123456789.,;:'-_()/"


def tiny_tokenizer(model_max_length: int = 32):
    """A T5-style char-level tokenizer (<pad> 0, </s> 1 appended, <unk> 2; lower-case letters, digits, punctuation)."""
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{c: i + 3 for i, c in enumerate(TINY_CHARS)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>", model_max_length=model_max_length
    )


def tiny_t5_encoder(d_model: int, seed: int = 0, num_layers: int = 2, umt5: bool = False):
    """A random `T5EncoderModel` (what CogVideoX and LTX load), or with `umt5` a `UMT5EncoderModel` (Wan's), with
    hidden size `d_model`; deterministic in `seed`."""
    from transformers import T5Config, T5EncoderModel, UMT5Config, UMT5EncoderModel

    torch.manual_seed(seed)
    config_class, model_class = (UMT5Config, UMT5EncoderModel) if umt5 else (T5Config, T5EncoderModel)
    config = config_class(vocab_size=len(TINY_CHARS) + 3, d_model=d_model, d_kv=8, d_ff=2 * d_model,
                          num_layers=num_layers, num_heads=2, relative_attention_num_buckets=8,
                          feed_forward_proj="gated-gelu")  # fmt: skip
    return model_class(config).eval()
