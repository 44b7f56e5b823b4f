"""Build a tiny random-weight Llama and a byte-level BPE tokenizer that vLLM's CPU build serves.

Run by the engine environment's interpreter (it needs torch, transformers and tokenizers)::

    python make_tiny_model.py OUT_DIR [--dtype bfloat16|float32] [--layers 2] [--hidden 128] [--check]

Nothing is downloaded: the configuration, the weights (fixed seed) and the tokenizer (trained on a
corpus generated here) are made locally, so the output is byte-for-byte the same for given
torch/transformers/tokenizers versions (``--check`` builds twice and compares the digests). Head size
32 is the smallest vLLM's CPU attention supports; bfloat16 is what vLLM's CPU build computes in
(it turns float32 into bfloat16 itself). Prints one JSON line: path, parameters, bytes, sha256.
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
from collections.abc import Iterator

os.environ.setdefault("RAYON_NUM_THREADS", "1")  # the BPE trainer: one thread, deterministic merges
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

HEAD_DIM = 32
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "<|{{ message['role'] }}|>\n{{ message['content'] }}<|end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
SPECIALS = ["<unk>", "<s>", "</s>", "<pad>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]
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
    "these",
    "those",
    "it",
    "its",
    "we",
    "you",
    "they",
    "model",
    "engine",
    "token",
    "tokens",
    "prefill",
    "decode",
    "cache",
    "kv",
    "block",
    "blocks",
    "memory",
    "cpu",
    "gpu",
    "node",
    "pool",
    "pools",
    "pod",
    "pods",
    "router",
    "request",
    "requests",
    "latency",
    "throughput",
    "batch",
    "batches",
    "queue",
    "scheduler",
    "placement",
    "cluster",
    "kubernetes",
    "operator",
    "serving",
    "server",
    "servers",
    "inference",
    "transfer",
    "network",
    "tensor",
    "layer",
    "layers",
    "head",
    "heads",
    "attention",
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
    "which",
    "who",
    "time",
    "fast",
    "slow",
    "small",
    "large",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "hundred",
    "thousand",
    "first",
    "second",
    "last",
    "next",
    "red",
    "green",
    "blue",
    "cat",
    "dog",
    "bird",
    "tree",
    "river",
    "mountain",
    "city",
    "house",
    "road",
    "car",
    "train",
    "book",
    "paper",
    "code",
    "test",
    "run",
]


def corpus(lines: int = 4000, seed: int = 1234) -> Iterator[str]:
    rng = random.Random(seed)
    for _ in range(lines):
        words = [rng.choice(WORDS) for _ in range(rng.randint(4, 16))]
        if rng.random() < 0.3:
            words.insert(rng.randrange(len(words)), str(rng.randint(0, 9999)))
        text = " ".join(words)
        yield text[0].upper() + text[1:] + rng.choice([".", "?", "!", ",", ":"])
    yield "0123456789 ABCDEFGHIJKLMNOPQRSTUVWXYZ abcdefghijklmnopqrstuvwxyz ,.;:!?'\"()[]{}<>/\\-_+=*&^%$#@~`|"


def build_tokenizer(vocab_size: int):  # -> PreTrainedTokenizerFast
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte encodable
        show_progress=False,
    )
    tok.train_from_iterator(corpus(), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        chat_template=CHAT_TEMPLATE,
        model_max_length=2048,
        clean_up_tokenization_spaces=False,
    )


def build(out: str, dtype: str, layers: int, hidden: int, vocab_size: int, seed: int) -> int:
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    tok = build_tokenizer(vocab_size)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=hidden // HEAD_DIM,
        num_key_value_heads=hidden // HEAD_DIM,
        head_dim=HEAD_DIM,
        max_position_embeddings=2048,
        rms_norm_eps=1e-5,
        # Wider than the usual 0.02: peaked logits, so greedy argmax is no near-tie that rounding
        # differences (a KV cache moved between engines vs computed in place) could flip.
        initializer_range=0.2,
        tie_word_embeddings=False,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).to(getattr(torch, dtype)).eval()
    model.generation_config = GenerationConfig(
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id
    )
    os.makedirs(out, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)  # config.json records the dtype
    tok.save_pretrained(out)
    return sum(p.numel() for p in model.parameters())


def digest(folder: str) -> str:
    h = hashlib.sha256()
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            h.update(name.encode() + b"\0")
            with open(path, "rb") as f:
                h.update(f.read())
    return h.hexdigest()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16"])
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--hidden", type=int, default=128, help="a multiple of 32")
    ap.add_argument("--vocab", type=int, default=1024)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--check", action="store_true", help="build twice and compare the digests")
    a = ap.parse_args()
    if a.hidden % HEAD_DIM:
        ap.error(f"--hidden must be a multiple of {HEAD_DIM}")
    started = time.monotonic()
    params = build(a.out, a.dtype, a.layers, a.hidden, a.vocab, a.seed)
    seconds = time.monotonic() - started
    sha = digest(a.out)
    size = sum(os.path.getsize(os.path.join(a.out, f)) for f in os.listdir(a.out))
    if a.check:
        again = tempfile.mkdtemp()
        try:
            build(again, a.dtype, a.layers, a.hidden, a.vocab, a.seed)
            if digest(again) != sha:
                sys.exit(f"not deterministic: {sha} != {digest(again)}")
        finally:
            shutil.rmtree(again)
    print(
        json.dumps(
            {"out": a.out, "params": params, "bytes": size, "seconds": round(seconds, 2), "sha256": sha}
        )
    )


if __name__ == "__main__":
    main()
