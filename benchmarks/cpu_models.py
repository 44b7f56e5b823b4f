#!/usr/bin/env python3
"""Random-weight models that vLLM serves, built locally: the CPU serving benchmark's shapes
(benchmarks/cpu_serving.py) and the serving tests' tiny model (``tiny``, tests/support/engines.py).

    python cpu_models.py OUT_DIR SHAPE [--dtype bfloat16] [--check]    # one shape of SHAPES
    python cpu_models.py --list

Runs in the engine environment (torch, transformers, tokenizers; no hub access needed). Random
weights serve at the speed of trained ones: the engine does the same FLOPs and moves the same
bytes. Each model gets a byte-level BPE tokenizer trained here on generated text (every byte
encodable, a chat template), padded with added tokens to the model's vocabulary, so every token id
the model can emit decodes. Weights come from a fixed seed: the same shape builds the same bytes
(for given torch/transformers/tokenizers versions; ``--check`` builds twice and compares). Prints
one JSON line: shape, parameters, dtype, bytes, sha256, seconds. The benchmark shapes'
``config.json`` files are committed beside the data (benchmarks/data/cpu/models/).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import sys
import tempfile
import time

os.environ.setdefault("RAYON_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

VOCAB = 32000

#: name → (architecture, config fields). Dense GQA from 0.1B to 1.4B parameters with four KV-head
#: layouts (GQA 3:1, MHA, GQA 6:1 and 8:1) and depths 12–28, and two small MoEs (Mixtral-style, 8
#: experts top 2, and 16 finer experts top 4). head_dim 64 or 128 (vLLM's CPU attention supports both).
SHAPES: dict[str, tuple[str, dict[str, float]]] = {
    # The serving tests' model: head size 32 is the smallest vLLM's CPU attention supports; weights
    # wider than the usual 0.02 (``init``) give peaked logits, so that greedy argmax is no near-tie
    # that rounding differences (a KV cache moved between engines vs computed in place) could flip.
    "tiny": (
        "llama",
        dict(layers=2, hidden=128, heads=4, kv=4, head_dim=32, ffn=256, vocab=1024, init=0.2),
    ),
    "dense-0.1b": ("llama", dict(layers=12, hidden=768, heads=12, kv=4, head_dim=64, ffn=2048)),
    "dense-0.3b-mha": ("llama", dict(layers=16, hidden=1024, heads=16, kv=16, head_dim=64, ffn=2816)),
    "dense-0.4b-deep": ("llama", dict(layers=24, hidden=1024, heads=16, kv=2, head_dim=64, ffn=4096)),
    "dense-1.4b": ("llama", dict(layers=28, hidden=1536, heads=12, kv=2, head_dim=128, ffn=8960)),
    "moe-0.3b": (
        "mixtral",
        dict(layers=8, hidden=768, heads=12, kv=4, head_dim=64, ffn=1536, experts=8, top_k=2),
    ),
    # Finer experts (16, top 4, narrower), wider attention: a second MoE, so that holding one MoE
    # out of the fit still leaves experts in it.
    "moe-0.4b-fine": (
        "mixtral",
        dict(layers=8, hidden=1024, heads=16, kv=4, head_dim=64, ffn=768, experts=16, top_k=4),
    ),
}

WORDS = [
    "the",
    "a",
    "an",
    "of",
    "to",
    "in",
    "on",
    "for",
    "with",
    "from",
    "by",
    "at",
    "as",
    "is",
    "are",
    "was",
    "be",
    "this",
    "that",
    "it",
    "we",
    "you",
    "they",
    "model",
    "engine",
    "token",
    "prefill",
    "decode",
    "cache",
    "memory",
    "cpu",
    "node",
    "pool",
    "router",
    "request",
    "latency",
    "batch",
    "queue",
    "scheduler",
    "hello",
    "world",
    "question",
    "answer",
    "please",
    "tell",
    "me",
    "about",
    "how",
    "why",
    "what",
    "when",
    "where",
    "red",
    "green",
    "blue",
    "river",
]


def _corpus(lines: int, seed: int = 1234):
    rng = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz"
    for _ in range(lines):
        words = []
        for _ in range(rng.randint(6, 18)):
            if rng.random() < 0.5:
                words.append(rng.choice(WORDS))
            else:  # made-up words give the BPE trainer enough distinct pairs to merge
                words.append("".join(rng.choice(letters) for _ in range(rng.randint(2, 9))))
        yield " ".join(words) + rng.choice([".", "?", "!", ","])


SPECIALS = ["<unk>", "<s>", "</s>", "<pad>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "<|{{ message['role'] }}|>\n{{ message['content'] }}<|end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def build_tokenizer(vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = SPECIALS  # ids 0-3: unk, bos, eos, pad (config_for)
    tok = Tokenizer(models.BPE(unk_token=None, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=min(vocab_size, 8192),
        min_frequency=2,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte encodable
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(20000), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        chat_template=CHAT_TEMPLATE,
        model_max_length=4096,
        clean_up_tokenization_spaces=False,
    )
    # Pad to the model's vocabulary with plain added tokens, so that every id decodes.
    missing = vocab_size - len(fast)
    if missing > 0:
        fast.add_tokens([f"<x{i}>" for i in range(missing)])
    return fast


def config_for(name: str, vocab_override: int | None = None):
    from transformers import LlamaConfig, MixtralConfig

    arch, s = SHAPES[name]
    vocab = int(vocab_override or s.get("vocab", VOCAB))
    common = dict(
        vocab_size=vocab,
        hidden_size=s["hidden"],
        intermediate_size=s["ffn"],
        num_hidden_layers=s["layers"],
        num_attention_heads=s["heads"],
        num_key_value_heads=s["kv"],
        head_dim=s["head_dim"],
        max_position_embeddings=4096,
        rms_norm_eps=1e-5,
        initializer_range=s.get("init", 0.02),
        tie_word_embeddings=False,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=3,
    )
    if arch == "mixtral":
        return MixtralConfig(**common, num_local_experts=s["experts"], num_experts_per_tok=s["top_k"])
    return LlamaConfig(**common)


def build(out: str, name: str, dtype: str = "bfloat16", seed: int = 0) -> dict[str, object]:
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig

    cfg = config_for(name)
    tok = build_tokenizer(cfg.vocab_size)
    assert len(tok) == cfg.vocab_size, (len(tok), cfg.vocab_size)
    torch.manual_seed(seed)
    cfg.dtype = getattr(torch, dtype)
    with torch.device("cpu"):
        model = AutoModelForCausalLM.from_config(cfg, dtype=getattr(torch, dtype)).eval()
    model.generation_config = GenerationConfig(bos_token_id=1, eos_token_id=2, pad_token_id=3)
    os.makedirs(out, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return {"shape": name, "params": sum(p.numel() for p in model.parameters()), "dtype": dtype}


def digest(folder: str) -> str:
    """sha256 over the folder's files, names and contents in name order."""
    h = hashlib.sha256()
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            h.update(name.encode() + b"\0")
            with open(path, "rb") as f:
                h.update(f.read())
    return h.hexdigest()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", nargs="?")
    ap.add_argument("shape", nargs="?", choices=sorted(SHAPES))
    ap.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--check", action="store_true", help="build twice and compare the digests")
    a = ap.parse_args()
    if a.list:
        print(json.dumps({k: {"architecture": v[0], **v[1]} for k, v in SHAPES.items()}, indent=1))
        return 0
    if not (a.out and a.shape):
        ap.error("OUT and SHAPE are required")
    t = time.monotonic()
    info = build(a.out, a.shape, a.dtype, a.seed)
    info["seconds"] = round(time.monotonic() - t, 1)
    info["sha256"] = digest(a.out)
    info["bytes"] = sum(os.path.getsize(os.path.join(a.out, f)) for f in os.listdir(a.out))
    if a.check:
        again = tempfile.mkdtemp()
        try:
            build(again, a.shape, a.dtype, a.seed)
            if digest(again) != info["sha256"]:
                sys.exit(f"not deterministic: {info['sha256']} != {digest(again)}")
        finally:
            shutil.rmtree(again)
    print(json.dumps(info))
    return 0


if __name__ == "__main__":
    sys.exit(main())
