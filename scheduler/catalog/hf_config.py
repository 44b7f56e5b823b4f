"""Read a Hugging Face ``config.json`` into a :class:`ModelConfig`.

One code path serves both the built-in catalog (``model_catalog`` passes trimmed copies of the
published config.json files through :func:`load_hf_config`) and user-supplied configs.

Families (``model_type`` → architecture) and the fields read:

* ``llama``, ``mistral``, ``qwen2``, ``qwen3`` (dense): ``num_hidden_layers``, ``hidden_size``,
  ``num_attention_heads``, ``num_key_value_heads``, ``head_dim`` (default hidden/heads),
  ``intermediate_size``, ``vocab_size``, ``tie_word_embeddings``, ``attention_bias``,
  ``max_position_embeddings``; sliding windows from ``layer_types`` or ``sliding_window``
  (Mistral: every layer; Qwen2/3: layers ≥ ``max_window_layers`` when ``use_sliding_window``).
  Qwen2 has q/k/v biases without an output bias; Qwen3 has learned q/k norms.
* ``mixtral``: ``num_local_experts``, ``num_experts_per_tok``; ``intermediate_size`` is the expert width.
* ``qwen3_moe``: ``num_experts``, ``num_experts_per_tok``, ``moe_intermediate_size``,
  ``decoder_sparse_step``, ``mlp_only_layers``.
* ``deepseek_v2``, ``deepseek_v3``: MLA (``q_lora_rank`` may be null, ``kv_lora_rank``,
  ``qk_nope_head_dim``, ``qk_rope_head_dim``, ``v_head_dim``) and MoE (``n_routed_experts``,
  ``n_shared_experts``, ``moe_intermediate_size``, ``first_k_dense_replace``, ``moe_layer_freq``);
  V3's router has a score-correction bias. The MTP layers (``num_nextn_predict_layers``) are not served.
* ``gpt_oss``: ``num_local_experts``, ``experts_per_token``/``num_experts_per_tok``,
  ``intermediate_size`` (expert width), ``layer_types`` + ``sliding_window``, ``head_dim``,
  ``attention_bias`` (q, k, v and o), attention sinks, router and expert biases.
* ``llama4`` (fields under ``text_config``) and ``llama4_text``: ``num_local_experts``,
  ``num_experts_per_tok``, ``intermediate_size`` (expert and shared-expert width),
  ``intermediate_size_mlp`` (dense layers), ``interleave_moe_layer_step`` or ``moe_layers``;
  chunked attention (``attention_chunk_size``) on the RoPE layers given by ``layer_types`` or
  ``no_rope_layers`` (empty: every ``no_rope_layer_interval``-th layer, default 4, is global);
  the vision tower's parameters from ``vision_config``.

Precision: ``torch_dtype``/``dtype`` (missing or ``auto``: bf16; an unknown name is an error); ``quantization_config`` with ``quant_method`` ``fp8`` (DeepSeek),
``mxfp4`` (gpt-oss: routed experts only), ``awq``/``gptq`` (``bits``), ``modelopt`` (``quant_algo``).
Not modelled (a few thousand parameters at most): Llama's ``mlp_bias``.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from hetsched.scheduler.catalog.models import MLAConfig, ModelConfig, MoEConfig, WindowKind
from pydantic import ValidationError

#: model_type → the architecture class name of that family.
SUPPORTED_ARCHITECTURES: dict[str, str] = {
    "llama": "LlamaForCausalLM",
    "mistral": "MistralForCausalLM",
    "mixtral": "MixtralForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "qwen3": "Qwen3ForCausalLM",
    "qwen3_moe": "Qwen3MoeForCausalLM",
    "deepseek_v2": "DeepseekV2ForCausalLM",
    "deepseek_v3": "DeepseekV3ForCausalLM",
    "gpt_oss": "GptOssForCausalLM",
    "llama4": "Llama4ForConditionalGeneration",
    "llama4_text": "Llama4ForCausalLM",
}
_ARCH_TO_TYPE = {arch: mtype for mtype, arch in SUPPORTED_ARCHITECTURES.items()}

# ``torch_dtype``/``dtype`` → weight precision: torch's names (with or without ``torch.``) and the
# short ones. Missing or ``auto`` (from_pretrained's "as stored") reads as bf16; anything else is an
# error naming the field, not a silent bf16.
_DTYPES = {
    "bfloat16": "bf16",
    "bf16": "bf16",
    "float16": "fp16",
    "half": "fp16",
    "fp16": "fp16",
    "float32": "fp32",
    "float": "fp32",
    "fp32": "fp32",
    "float8_e4m3fn": "fp8",
    "float8_e5m2": "fp8",
}
DEFAULT_DTYPE = "bf16"
# Real models have at most a few hundred layers; the bound keeps the per-layer loops below (and a
# hostile ConfigMap) from taking minutes or gigabytes.
MAX_LAYERS = 1024
# No dimension, count or id of a real config comes near this; larger ones only overflow the estimate.
MAX_INTEGER = 10**9


class _Fields:
    """Typed access to one (possibly nested) config mapping, with errors that name the field."""

    def __init__(self, data: Mapping[str, Any], origin: str, prefix: str = "") -> None:
        self.data = data
        self.origin = origin
        self.prefix = prefix

    def error(self, message: str) -> ValueError:
        return ValueError(f"{self.origin}: {message}")

    def name(self, key: str) -> str:
        return f"{self.prefix}{key}"

    def has(self, key: str) -> bool:
        return self.data.get(key) is not None

    def raw(self, key: str) -> Any:
        value = self.data.get(key)
        if value is None:
            raise self.error(f"missing field '{self.name(key)}'")
        return value

    def integer(self, key: str, default: int | None = None) -> int:
        if default is not None and not self.has(key):
            return default
        value = self.raw(key)
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or (isinstance(value, float) and not math.isfinite(value))
            or int(value) != value
        ):
            raise self.error(f"field '{self.name(key)}' must be an integer, got {value!r}")
        if abs(value) > MAX_INTEGER:
            raise self.error(f"field '{self.name(key)}' is {value}: out of range (at most {MAX_INTEGER:.0e})")
        return int(value)

    def positive(self, key: str, default: int | None = None, maximum: int | None = None) -> int:
        """An integer ≥ 1 (and ≤ ``maximum``): counts, strides and divisors."""
        value = self.integer(key, default)
        if value < 1 or (maximum is not None and value > maximum):
            bound = f"between 1 and {maximum}" if maximum is not None else "at least 1"
            raise self.error(f"field '{self.name(key)}' must be {bound}, got {value}")
        return value

    def opt_integer(self, key: str) -> int | None:
        return self.integer(key) if self.has(key) else None

    def number(self, key: str, default: float | None = None) -> float:
        if default is not None and not self.has(key):
            return default
        value = self.raw(key)
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or (isinstance(value, float) and not math.isfinite(value))
            or abs(value) > 1e300
        ):
            raise self.error(f"field '{self.name(key)}' must be a finite number, got {value!r}")
        return float(value)

    def flag(self, key: str, default: bool) -> bool:
        if not self.has(key):
            return default
        value = self.data[key]
        if not isinstance(value, bool):
            raise self.error(f"field '{self.name(key)}' must be true or false, got {value!r}")
        return value

    def text(self, key: str, default: str) -> str:
        if not self.has(key):
            return default
        value = self.data[key]
        if not isinstance(value, str):
            raise self.error(f"field '{self.name(key)}' must be a string, got {value!r}")
        return value

    def items(self, key: str) -> list[Any] | None:
        if not self.has(key):
            return None
        value = self.data[key]
        if not isinstance(value, list):
            raise self.error(f"field '{self.name(key)}' must be a list, got {value!r}")
        return value

    def integers(self, key: str) -> list[int] | None:
        values = self.items(key)
        if values is None:
            return None
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            raise self.error(f"field '{self.name(key)}' must be a list of integers")
        return values

    def sub(self, key: str) -> _Fields:
        value = self.raw(key)
        if not isinstance(value, Mapping):
            raise self.error(f"field '{self.name(key)}' must be an object, got {type(value).__name__}")
        return _Fields(value, self.origin, f"{self.name(key)}.")


# ---- reading ---------------------------------------------------------------------------------------
def _read(source: str | os.PathLike[str]) -> tuple[dict[str, Any], str]:
    path = Path(source)
    if path.is_dir():
        path = path / "config.json"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file") from None
    except OSError as exc:
        raise ValueError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"{path}: malformed JSON at line {exc.lineno} column {exc.colno} (char {exc.pos}): {exc.msg}"
        ) from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object at the top level, got {type(data).__name__}")
    return data, str(path)


def load_hf_config(
    path_or_mapping: str | os.PathLike[str] | Mapping[str, Any],
    name: str | None = None,
    *,
    hf_id: str | None = None,
    source: str | None = None,
) -> ModelConfig:
    """Build a ModelConfig from a Hugging Face ``config.json`` (a path, a directory holding one, or
    the parsed mapping).

    ``name`` defaults to the last part of ``_name_or_path``, else the directory of a
    ``config.json`` (or the stem of another file name); ``source`` to the file path. Raises
    ``ValueError`` naming the file and the missing or malformed field, or the unsupported
    architecture.
    """
    if isinstance(path_or_mapping, Mapping):
        data: Mapping[str, Any] = path_or_mapping
        origin = "config.json"
        default_source = "config.json mapping"
        default_name = None
    else:
        data, origin = _read(path_or_mapping)
        default_source = origin
        path = Path(origin)
        stem = path.parent.name if path.name == "config.json" else path.stem
        default_name = stem.lower() if stem not in ("", ".") else None
    f = _Fields(data, origin)
    model_type = _model_type(f)
    name_or_path = data.get("_name_or_path")
    if name is None:
        if isinstance(name_or_path, str) and name_or_path.strip("/"):
            name = name_or_path.rstrip("/").rsplit("/", 1)[-1].lower()
        else:
            name = default_name or model_type.replace("_", "-")
    fields = _PARSERS[model_type](f)
    weight_precision, expert_precision = _precisions(f)
    fields.setdefault("native_weight_precision", weight_precision)
    if expert_precision is not None:
        fields["native_expert_precision"] = expert_precision
    try:
        return ModelConfig(
            name=name,
            source=source or default_source,
            hf_id=hf_id if hf_id is not None else (name_or_path if isinstance(name_or_path, str) else None),
            **fields,
        )
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'config'}: {err['msg']}" for err in exc.errors()
        )
        raise ValueError(f"{origin}: {problems}") from None


def _model_type(f: _Fields) -> str:
    archs = f.data.get("architectures")
    arch = archs[0] if isinstance(archs, Sequence) and not isinstance(archs, str) and archs else None
    mtype = f.data.get("model_type")
    if isinstance(mtype, str) and mtype in SUPPORTED_ARCHITECTURES:
        return mtype
    if mtype is None and isinstance(arch, str) and arch in _ARCH_TO_TYPE:
        return _ARCH_TO_TYPE[arch]
    if mtype is None and arch is None:
        raise f.error("missing field 'model_type' (and no 'architectures' to infer it from)")
    supported = ", ".join(f"{a} ({t})" for t, a in SUPPORTED_ARCHITECTURES.items())
    raise f.error(f"unsupported architecture {arch!r} (model_type {mtype!r}); supported: {supported}")


def _dtype(f: _Fields) -> str:
    """The weight precision ``torch_dtype``/``dtype`` (top level, else ``text_config``) declares."""
    field, dtype = None, None
    text = f.data.get("text_config")
    for prefix, data in (("", f.data), ("text_config.", text if isinstance(text, Mapping) else {})):
        for key in ("torch_dtype", "dtype"):
            if data.get(key) is not None:
                field, dtype = f"{prefix}{key}", data[key]
                break
        if field is not None:
            break
    if field is None:
        return DEFAULT_DTYPE
    name = dtype.lower().removeprefix("torch.") if isinstance(dtype, str) else None
    if name == "auto":
        return DEFAULT_DTYPE
    if name not in _DTYPES:
        accepted = ", ".join(sorted(_DTYPES))
        raise f.error(f"field '{field}' is {dtype!r}: unknown dtype; accepted: {accepted} (or auto, or none)")
    return _DTYPES[name]


def _precisions(f: _Fields) -> tuple[str, str | None]:
    weights = _dtype(f)
    experts: str | None = None
    quant = f.data.get("quantization_config")
    if isinstance(quant, Mapping):
        method = str(quant.get("quant_method", "")).lower()
        if method in ("fp8", "fbgemm_fp8"):
            weights = "fp8"
        elif method == "mxfp4":
            experts = "mxfp4"  # gpt-oss: only the MoE experts are MXFP4; attention/router/embeddings bf16
        elif method in ("awq", "gptq"):
            bits = quant.get("bits", quant.get("w_bit"))
            weights = {4: "int4", 8: "int8"}.get(bits if isinstance(bits, int) else 0, weights)
        elif method == "modelopt":
            algo = str(quant.get("quant_algo", "")).upper()
            weights = {"FP8": "fp8", "NVFP4": "nvfp4"}.get(algo, weights)
    return weights, experts


# ---- shared pieces ---------------------------------------------------------------------------------
def _attention(f: _Fields) -> dict[str, Any]:
    layers = f.positive("num_hidden_layers", maximum=MAX_LAYERS)
    hidden = f.integer("hidden_size")
    heads = f.integer("num_attention_heads")
    kv_heads = f.integer("num_key_value_heads")
    head_dim = f.opt_integer("head_dim")
    if head_dim is None:
        if heads < 1:
            raise f.error(f"field '{f.name('num_attention_heads')}' must be at least 1, got {heads}")
        if hidden % heads:
            raise f.error(
                f"missing field '{f.prefix}head_dim' (hidden_size {hidden} is not a multiple of "
                f"num_attention_heads {heads})"
            )
        head_dim = hidden // heads
    return {
        "num_layers": layers,
        "hidden_size": hidden,
        "num_heads": heads,
        "num_kv_heads": kv_heads,
        "head_dim": head_dim,
        "vocab_size": f.integer("vocab_size"),
        "max_position_embeddings": f.opt_integer("max_position_embeddings"),
    }


def _tie(f: _Fields, top: _Fields | None = None) -> bool:
    """tie_word_embeddings; every supported family defaults to untied."""
    if f.has("tie_word_embeddings"):
        return f.flag("tie_word_embeddings", False)
    return top.flag("tie_word_embeddings", False) if top is not None else False


def _layer_types(f: _Fields, layers: int) -> list[str] | None:
    values = f.items("layer_types")
    if values is None:
        return None
    if len(values) != layers:
        raise f.error(f"field '{f.prefix}layer_types' has {len(values)} entries for {layers} layers")
    known = {"full_attention", "sliding_attention", "chunked_attention"}
    for value in values:
        if value not in known:
            raise f.error(f"field '{f.prefix}layer_types': unknown layer type {value!r}")
    return [str(v) for v in values]


def _windows(f: _Fields, layers: int, default_sliding_layers: int) -> dict[str, Any]:
    """Sliding-window layers from ``layer_types`` (if present) or the family's default count."""
    types = _layer_types(f, layers)
    count = types.count("sliding_attention") if types is not None else default_sliding_layers
    if not count:
        return {}
    return {"sliding_window": f.integer("sliding_window"), "sliding_window_layers": count}


def _moe_pattern(f: _Fields, moe_layers: set[int], layers: int) -> tuple[int, int]:
    """(first_dense_layers, layer_interval) reproducing the set of MoE layers, or a ValueError."""
    first = min(moe_layers)
    for interval in range(1, layers + 1):
        start = first - interval + 1
        if start < 0:
            break
        expected = {i for i in range(start, layers) if (i - start) % interval == interval - 1}
        if expected == moe_layers:
            return start, interval
    raise f.error(
        f"MoE layers {sorted(moe_layers)} do not follow a 'first dense layers, then every n-th layer' "
        "pattern, which is all the model schema can express"
    )


def _moe(f: _Fields, moe_layers: set[int], layers: int, **kwargs: Any) -> MoEConfig:
    first, interval = _moe_pattern(f, moe_layers, layers)
    return MoEConfig(first_dense_layers=first, layer_interval=interval, **kwargs)


# ---- families --------------------------------------------------------------------------------------
def _llama(f: _Fields) -> dict[str, Any]:
    out = _attention(f)
    out["intermediate_size"] = f.integer("intermediate_size")
    out["tie_embeddings"] = _tie(f)
    out["attention_bias"] = f.flag("attention_bias", False)
    out.update(_windows(f, out["num_layers"], 0))
    return out


def _mistral_windows(f: _Fields, layers: int) -> dict[str, Any]:
    # Mistral/Mixtral: a non-null sliding_window applies to every layer (Mistral-7B-v0.1: 4096).
    return _windows(f, layers, layers if f.has("sliding_window") else 0)


def _mistral(f: _Fields) -> dict[str, Any]:
    out = _attention(f)
    out["intermediate_size"] = f.integer("intermediate_size")
    out["tie_embeddings"] = _tie(f)
    out.update(_mistral_windows(f, out["num_layers"]))
    return out


def _mixtral(f: _Fields) -> dict[str, Any]:
    out = _attention(f)
    layers = out["num_layers"]
    out["intermediate_size"] = 0
    out["tie_embeddings"] = _tie(f)
    out["moe"] = _moe(
        f,
        set(range(layers)),
        layers,
        num_experts=f.integer("num_local_experts"),
        experts_per_token=f.integer("num_experts_per_tok"),
        expert_intermediate_size=f.integer("intermediate_size"),
    )
    out.update(_mistral_windows(f, layers))
    return out


def _qwen_windows(f: _Fields, layers: int) -> dict[str, Any]:
    # Qwen2/Qwen3: with use_sliding_window, layers from max_window_layers on use the window.
    default = 0
    if f.flag("use_sliding_window", False):
        default = max(0, layers - f.integer("max_window_layers", layers))
    return _windows(f, layers, default)


def _qwen2(f: _Fields) -> dict[str, Any]:
    out = _attention(f)
    out["intermediate_size"] = f.integer("intermediate_size")
    out["tie_embeddings"] = _tie(f)
    out["attention_bias"] = True  # Qwen2: q/k/v projections always carry a bias ...
    out["attention_out_bias"] = False  # ... the output projection does not
    out.update(_qwen_windows(f, out["num_layers"]))
    return out


def _qwen3(f: _Fields) -> dict[str, Any]:
    out = _attention(f)
    out["intermediate_size"] = f.integer("intermediate_size")
    out["tie_embeddings"] = _tie(f)
    out["attention_bias"] = f.flag("attention_bias", False)
    out["qk_norm"] = True
    out.update(_qwen_windows(f, out["num_layers"]))
    return out


def _qwen3_moe(f: _Fields) -> dict[str, Any]:
    out = _attention(f)
    layers = out["num_layers"]
    out["tie_embeddings"] = _tie(f)
    out["attention_bias"] = f.flag("attention_bias", False)
    out["qk_norm"] = True
    step = f.positive("decoder_sparse_step", 1)
    mlp_only = set(f.integers("mlp_only_layers") or [])
    num_experts = f.integer("num_experts")
    moe_layers = {i for i in range(layers) if i not in mlp_only and num_experts > 0 and (i + 1) % step == 0}
    out["intermediate_size"] = f.integer("intermediate_size") if len(moe_layers) < layers else 0
    if moe_layers:
        out["moe"] = _moe(
            f,
            moe_layers,
            layers,
            num_experts=num_experts,
            experts_per_token=f.integer("num_experts_per_tok"),
            expert_intermediate_size=f.integer("moe_intermediate_size"),
        )
    out.update(_qwen_windows(f, layers))
    return out


def _deepseek(f: _Fields, v3: bool) -> dict[str, Any]:
    layers = f.positive("num_hidden_layers", maximum=MAX_LAYERS)
    heads = f.integer("num_attention_heads")
    nope = f.integer("qk_nope_head_dim")
    rope = f.integer("qk_rope_head_dim")
    out: dict[str, Any] = {
        "num_layers": layers,
        "hidden_size": f.integer("hidden_size"),
        "num_heads": heads,
        # MLA caches one latent per token, not per-head K/V; HF sets num_key_value_heads = heads.
        "num_kv_heads": f.integer("num_key_value_heads", heads),
        "head_dim": nope + rope,
        "vocab_size": f.integer("vocab_size"),
        "max_position_embeddings": f.opt_integer("max_position_embeddings"),
        "tie_embeddings": _tie(f),
        "mla": MLAConfig(
            kv_lora_rank=f.integer("kv_lora_rank"),
            q_lora_rank=f.opt_integer("q_lora_rank"),
            qk_nope_head_dim=nope,
            qk_rope_head_dim=rope,
            v_head_dim=f.integer("v_head_dim"),
        ),
    }
    routed = f.opt_integer("n_routed_experts")
    first_dense = f.integer("first_k_dense_replace", 0)
    freq = f.positive("moe_layer_freq", 1)
    moe_layers = {i for i in range(layers) if i >= first_dense and i % freq == 0} if routed else set[int]()
    out["intermediate_size"] = f.integer("intermediate_size") if len(moe_layers) < layers else 0
    if moe_layers:
        assert routed is not None
        out["moe"] = _moe(
            f,
            moe_layers,
            layers,
            num_experts=routed,
            experts_per_token=f.integer("num_experts_per_tok"),
            expert_intermediate_size=f.integer("moe_intermediate_size"),
            num_shared_experts=f.integer("n_shared_experts", 0),
            # V3's router adds a per-expert score-correction bias (e_score_correction_bias).
            router_bias=v3 or f.text("topk_method", "") == "noaux_tc",
        )
    return out


def _gpt_oss(f: _Fields) -> dict[str, Any]:
    out = _attention(f)
    layers = out["num_layers"]
    out["intermediate_size"] = 0
    out["tie_embeddings"] = _tie(f)
    out["attention_bias"] = f.flag("attention_bias", True)  # q, k, v and o
    out["attention_sinks"] = True
    per_token_key = "experts_per_token" if f.has("experts_per_token") else "num_experts_per_tok"
    per_token = f.integer(per_token_key)
    out["moe"] = _moe(
        f,
        set(range(layers)),
        layers,
        num_experts=f.integer("num_local_experts"),
        experts_per_token=per_token,
        expert_intermediate_size=f.integer("intermediate_size"),
        router_bias=True,
        expert_bias=True,
    )
    # gpt-oss alternates sliding (window 128) and full attention; layer_types says which.
    out.update(_windows(f, layers, layers // 2 if f.has("sliding_window") else 0))
    return out


def _llama4_vision_params(v: _Fields, text_hidden: int) -> int:
    """Parameters of the Llama 4 vision encoder, pixel-shuffle adapter and projector (transformers'
    ``Llama4VisionModel`` + ``Llama4MultiModalProjector``)."""
    h = v.integer("hidden_size")
    inter = v.integer("intermediate_size")
    layers = v.positive("num_hidden_layers", maximum=MAX_LAYERS)
    patch = v.positive("patch_size")
    channels = v.integer("num_channels", 3)
    image = v.positive("image_size")
    shuffle = v.number("pixel_shuffle_ratio", 0.5)
    if not 1e-3 <= shuffle <= 1:  # real configs use 0.5; a tiny ratio would divide by zero below
        raise v.error(f"field '{v.name('pixel_shuffle_ratio')}' must be in [0.001, 1], got {shuffle}")
    proj_in = v.integer("projector_input_dim")
    proj_out = v.integer("projector_output_dim")
    vision_out = v.integer("vision_output_dim")
    patches = (image // patch) ** 2
    embed = channels * patch * patch * h + h + (patches + 1) * h + 2 * 2 * h  # patches, cls, pos, 2 LNs
    layer = 4 * (h * h + h) + (h * inter + inter) + (inter * h + h) + 2 * 2 * h
    adapter_in = round(h / shuffle**2)
    adapter = adapter_in * proj_in + proj_in * proj_out  # fc1, fc2 without bias
    projector = vision_out * text_hidden + (text_hidden if v.flag("multi_modal_projector_bias", False) else 0)
    return embed + layers * layer + adapter + projector


def _llama4(top: _Fields) -> dict[str, Any]:
    f = top.sub("text_config") if top.has("text_config") else top
    out = _attention(f)
    layers = out["num_layers"]
    out["tie_embeddings"] = _tie(f, top)
    out["attention_bias"] = f.flag("attention_bias", False)
    # use_qk_norm is a parameter-free L2 norm in Llama 4: no learned weights to count.
    explicit_moe = f.integers("moe_layers")
    if explicit_moe is not None:
        moe_layers = set(explicit_moe)
    else:
        step = f.positive("interleave_moe_layer_step", 1)
        moe_layers = set(range(step - 1, layers, step))
    expert = f.integer("intermediate_size")
    out["intermediate_size"] = f.integer("intermediate_size_mlp") if len(moe_layers) < layers else 0
    out["moe"] = _moe(
        f,
        moe_layers,
        layers,
        num_experts=f.integer("num_local_experts"),
        experts_per_token=f.integer("num_experts_per_tok"),
        expert_intermediate_size=expert,
        num_shared_experts=1,  # Llama4TextMoe always has one shared expert of the expert width
    )
    chunk = f.opt_integer("attention_chunk_size")
    if chunk:
        types = _layer_types(f, layers)
        if types is not None:
            chunked = types.count("chunked_attention")
        else:
            no_rope = f.integers("no_rope_layers") or []
            if no_rope:
                if len(no_rope) != layers:
                    raise f.error(
                        f"field '{f.prefix}no_rope_layers' has {len(no_rope)} entries for {layers} layers"
                    )
                chunked = sum(1 for use_rope in no_rope if use_rope)  # 1: RoPE + chunked; 0: global NoPE
            else:
                interval = f.positive("no_rope_layer_interval", 4)
                chunked = sum(1 for i in range(layers) if (i + 1) % interval != 0)
        if chunked:
            out["sliding_window"] = chunk
            out["sliding_window_layers"] = chunked
            out["sliding_window_kind"] = WindowKind.CHUNKED
    if top.has("vision_config"):
        out["vision_params"] = _llama4_vision_params(top.sub("vision_config"), out["hidden_size"])
    return out


_PARSERS: dict[str, Callable[[_Fields], dict[str, Any]]] = {
    "llama": _llama,
    "mistral": _mistral,
    "mixtral": _mixtral,
    "qwen2": _qwen2,
    "qwen3": _qwen3,
    "qwen3_moe": _qwen3_moe,
    "deepseek_v2": lambda f: _deepseek(f, v3=False),
    "deepseek_v3": lambda f: _deepseek(f, v3=True),
    "gpt_oss": _gpt_oss,
    "llama4": _llama4,
    "llama4_text": _llama4,
}
