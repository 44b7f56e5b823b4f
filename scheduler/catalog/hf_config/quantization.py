"""A checkpoint's ``quantization_config``: the bytes each weight group is stored in.

Methods read (the format of the quantized parameters, their bytes with group scales and zero points;
per-tensor and per-channel scales are left out, < 0.1 %):

* ``fp8`` / ``fbgemm_fp8``: FP8, 1 byte; every weight, embeddings and norms included, unless
  ``modules_to_not_convert`` / ``ignored_layers`` leave it out (a checkpoint without such a list is
  counted as all-FP8, as the estimator always has; vLLM keeps the embedding and LM head in BF16);
* ``mxfp4`` (gpt-oss): the routed experts, 4 bits + one E8M0 scale per 32;
* ``compressed-tensors``: ``config_groups`` (int or float weights of ``num_bits``, per channel,
  tensor or group of ``group_size``; BF16 group scales, packed zero points when asymmetric), on the
  linear layers of the text model less ``ignore``;
* ``modelopt`` (config.json, or the ``hf_quant_config.json`` beside it): NVFP4 (4 bits + one FP8
  scale per 16) or FP8, on the linear layers less ``ignore`` / ``exclude_modules``;
* ``awq`` (``bits``/``w_bit``, ``group_size``/``q_group_size``, ``zero_point``): FP16 scales and
  packed zero points per group; linear layers of the decoder, never the LM head;
* ``gptq`` (``bits``, ``group_size``, ``lm_head``, ``dynamic`` exclusions): FP16 scales and packed
  zero points per group; the LM head only with ``lm_head: true``.

Any other method is refused by name. Exclusion patterns (names, ``*`` wildcards, ``re:`` regular
expressions) are classified by the module names they mention, never executed: a pattern naming a
module the estimator cannot place is refused by name, not skipped.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from hetsched.scheduler.catalog.hf_config.fields import Fields, Unsupported
from hetsched.scheduler.catalog.layers import AttentionLayers, CheckpointWeights, WeightGroup
from hetsched.scheduler.catalog.models import ModelConfig

G = WeightGroup
#: What "the linear layers" of a text model are, for methods that target ``Linear``.
LINEAR = frozenset({G.ATTENTION, G.STATE, G.DENSE_FFN, G.SHARED_EXPERTS, G.EXPERTS, G.LM_HEAD})
_DTYPE_BYTES = {"bf16": 2.0, "fp16": 2.0, "fp32": 4.0, "fp8": 1.0}
_FORMAT_OF_BITS = {("int", 8): "int8", ("int", 4): "int4", ("float", 8): "fp8", ("float", 4): "nvfp4"}


@dataclass
class Storage:
    """What a method stores: ``fmt`` in ``bytes_per_param`` for the groups it quantizes."""

    method: str
    fmt: str
    bytes_per_param: float
    groups: set[WeightGroup]
    exclusions: list[str] = field(default_factory=list)
    kv_cache_format: str | None = None
    # Groups a config_group gives another format (compressed-tensors with several groups).
    overrides: dict[WeightGroup, tuple[str, float]] = field(default_factory=dict)


# ---- reading the methods ---------------------------------------------------------------------------
def _exclusions(q: Fields, *keys: str) -> list[str]:
    out: list[str] = []
    for key in keys:
        out.extend(q.strings(key) or [])
    return out


def _ct_format(w: Fields) -> tuple[str, float]:
    """Format and bytes of a compressed-tensors / ModelOpt ``weights`` scheme."""
    kind = w.text("type", "int")
    bits = w.positive("num_bits")
    name = _FORMAT_OF_BITS.get((kind, bits))
    if name is None:
        raise w.unsupported(f"{bits}-bit {kind} weights are not modelled")
    strategy = w.text("strategy", "group" if w.has("group_size") else "channel")
    size = bits / 8
    if strategy == "group" or (strategy not in ("channel", "tensor", "block") and w.has("group_size")):
        g = w.positive("group_size")
        scale = 1.0 if kind == "float" and bits == 4 else 2.0  # NVFP4: FP8 scales; int: BF16 scales
        size += scale / g
        if not w.flag("symmetric", True):
            size += bits / 8 / g  # packed zero points
    elif strategy not in ("channel", "tensor", "block"):
        raise w.unsupported(f"weight quantization strategy {strategy!r} is not modelled")
    return name, size


def _compressed_tensors(q: Fields) -> Storage:
    groups = q.sub("config_groups")
    storage: Storage | None = None
    for key in list(groups.data)[:64]:
        cg = groups.sub(str(key))
        w = cg.opt_sub("weights")
        if w is None:
            continue
        fmt, size = _ct_format(w)
        targets = cg.strings("targets") or ["Linear"]
        if storage is None and "Linear" in targets:
            storage = Storage("compressed-tensors", fmt, size, set(LINEAR))
            continue
        for target in targets:
            for group, layer, _ in classify(target):
                if layer is not None:
                    raise q.unsupported(
                        f"a quantization config group targeting one layer ({target!r}) is not read"
                    )
                if storage is None:
                    storage = Storage("compressed-tensors", fmt, size, set())
                storage.overrides[group] = (fmt, size)
    if storage is None:
        raise q.unsupported(
            "compressed-tensors config without weight quantization of linear layers is not read"
        )
    storage.exclusions = _exclusions(q, "ignore")
    kv = q.opt_sub("kv_cache_scheme")
    if kv is not None:
        storage.kv_cache_format = _FORMAT_OF_BITS.get((kv.text("type", "float"), kv.integer("num_bits", 8)))
    return storage


def _modelopt(q: Fields) -> Storage:
    algo = q.text("quant_algo", "").upper()
    if algo == "NVFP4":
        g = q.positive("group_size", 16)
        storage = Storage("modelopt", "nvfp4", 0.5 + 1.0 / g, set(LINEAR))
    elif algo == "FP8":
        storage = Storage("modelopt", "fp8", 1.0, set(LINEAR))
    elif q.has("config_groups"):
        storage = _compressed_tensors(q)
        storage.method = "modelopt"
    else:
        raise q.unsupported(
            f"ModelOpt quantization algorithm {algo or None!r} (field 'quant_algo') is not read"
        )
    storage.exclusions = _exclusions(q, "ignore", "exclude_modules")
    kv = q.opt_sub("kv_cache_scheme")
    if kv is not None:
        storage.kv_cache_format = _FORMAT_OF_BITS.get((kv.text("type", "float"), kv.integer("num_bits", 8)))
    elif q.has("kv_cache_quant_algo"):
        storage.kv_cache_format = q.text("kv_cache_quant_algo", "").lower() or None
    return storage


def _group_bits(q: Fields, bits_keys: tuple[str, ...], group_keys: tuple[str, ...]) -> tuple[int, int]:
    bits = next((q.positive(k) for k in bits_keys if q.has(k)), None)
    if bits is None:
        raise q.error(f"missing field '{q.name(bits_keys[0])}'")
    group = next((q.integer(k) for k in group_keys if q.has(k)), 128)
    if group == 0 or group < -1:
        raise q.error(f"field '{q.name(group_keys[0])}' must be -1 or positive, got {group}")
    return bits, group


def _int_format(q: Fields, bits: int) -> str:
    name = _FORMAT_OF_BITS.get(("int", bits))
    if name is None:
        raise q.unsupported(f"{bits}-bit integer weights are not modelled (4 and 8 are)")
    return name


def _awq(q: Fields) -> Storage:
    bits, group = _group_bits(q, ("bits", "w_bit"), ("group_size", "q_group_size"))
    size = bits / 8
    if group > 0:
        size += 2.0 / group + (bits / 8 / group if q.flag("zero_point", True) else 0.0)
    groups = set(LINEAR) - {G.LM_HEAD}
    return Storage("awq", _int_format(q, bits), size, groups, _exclusions(q, "modules_to_not_convert"))


def _gptq(q: Fields) -> Storage:
    bits, group = _group_bits(q, ("bits",), ("group_size",))
    size = bits / 8
    if group > 0:
        size += 2.0 / group + bits / 8 / group  # FP16 scales and packed zero points (stored even if sym)
    groups = set(LINEAR) - ({G.LM_HEAD} if not q.flag("lm_head", False) else set())
    exclusions: list[str] = []
    dynamic = q.opt_sub("dynamic")
    if dynamic is not None:
        for rule in list(dynamic.data)[:1024]:
            rule = str(rule)
            if not rule.startswith("-:"):
                raise q.unsupported(f"GPTQ per-module overrides (dynamic rule {rule!r}) are not read")
            exclusions.append("re:" + rule[2:])
    return Storage("gptq", _int_format(q, bits), size, groups, exclusions)


def read_storage(q: Fields) -> Storage:
    """The storage a ``quantization_config`` (or sidecar) describes; an unread method is refused."""
    method = q.text("quant_method", "").lower()
    if not method and q.has("quant_algo"):
        method = "modelopt"
    if not method and (q.has("w_bit") or q.has("q_group_size")):
        method = "awq"
    if method in ("fp8", "fbgemm_fp8"):
        return Storage(method, "fp8", 1.0, set(G), _exclusions(q, "modules_to_not_convert", "ignored_layers"))
    if method == "mxfp4":
        return Storage(
            "mxfp4", "mxfp4", 0.5 + 1.0 / 32, {G.EXPERTS}, _exclusions(q, "modules_to_not_convert")
        )
    if method == "compressed-tensors":
        return _compressed_tensors(q)
    if method == "modelopt":
        return _modelopt(q)
    if method == "awq":
        return _awq(q)
    if method == "gptq":
        return _gptq(q)
    raise q.unsupported(
        f"quantization method {method or None!r} (field '{q.name('quant_method')}') is not read; read: "
        "fp8, mxfp4, compressed-tensors, modelopt, awq, gptq"
    )


# ---- which parameters a pattern names -------------------------------------------------------------
_IGNORED = ("bias", "e_score_correction", "rotary")
_MTP = ("mtp", "eh_proj", "nextn", "shared_head", "enorm", "hnorm")  # speculative layers: not served
_VISION = ("vision", "visual", "multi_modal_projector", "mm_projector", "embed_vision", "patch_embed", "vit")


def _layer_index(text: str) -> int | None:
    """The layer a module path names (``layers.12.``), or None for every layer (wildcards, regex)."""
    marker = "layers."
    at = text.find(marker)
    if at < 0:
        return None
    digits = ""
    for c in text[at + len(marker) :]:
        if not c.isdigit():
            break
        digits += c
    return int(digits) if digits and len(digits) < 7 else None


_MAX_ALTERNATIVES = 64


def _alternatives(pattern: str) -> list[str]:
    """A pattern as plain texts to classify: a ``re:`` expression with its escaped dots unescaped
    and its (non-nested) ``(a|b)`` groups expanded; never compiled or run."""
    if not pattern.startswith("re:"):
        return [pattern]
    texts = [pattern[3:].replace("\\.", ".")]
    out: list[str] = []
    while texts:
        text = texts.pop()
        start = text.find("(")
        end = text.find(")", start + 1)
        if start < 0 or end < 0 or "(" in text[start + 1 : end]:
            out.append(text)
        else:
            body = text[start + 1 : end].removeprefix("?:")
            texts.extend(text[:start] + alt + text[end + 1 :] for alt in body.split("|"))
        if len(out) + len(texts) > _MAX_ALTERNATIVES:
            raise Unsupported(f"quantization exclusion {pattern!r} has too many alternatives to read")
    return out


def classify(pattern: str) -> list[tuple[WeightGroup, int | None, str | None]]:
    """The weight groups (with layer and sub-module, when named) a module pattern covers; [] for
    modules that hold no quantizable weights (norms, biases, MTP layers). Raises Unsupported for
    a pattern naming nothing the estimator counts."""
    out: list[tuple[WeightGroup, int | None, str | None]] = []
    for text in _alternatives(pattern):
        for hit in _classify(text, pattern):
            if hit not in out:
                out.append(hit)
    return out


def _classify(text: str, pattern: str) -> list[tuple[WeightGroup, int | None, str | None]]:
    text = text.lower()
    if text in ("gate", "router"):  # a bare module name: the MoE router (vLLM matches by suffix)
        return [(G.ROUTER, None, None)]
    if any(k in text for k in _MTP):
        return []
    layer = _layer_index(text)
    tail = text.split("layers.", 1)[-1]
    if any(k in text for k in _VISION):
        return [(G.VISION, None, None)]
    if "lm_head" in text or "output_layer" in text:
        return [(G.LM_HEAD, None, None)]
    if "embed" in text and "layers." not in text:
        return [(G.EMBEDDING, None, None)]
    if "shared_expert_gate" in tail or tail.endswith(("mlp.gate", "router", ".gate")) or "mlp.router" in tail:
        return [(G.ROUTER, layer, None)]
    if any(k in tail for k in _IGNORED):
        return []
    if "norm" in tail:  # norm weights: only the fp8 method counts them as converted
        return [(G.NORMS, None, None)]
    if "shared_expert" in tail:
        return [(G.SHARED_EXPERTS, layer, _part(tail))]
    if "experts" in tail:
        return [(G.EXPERTS, layer, _part(tail))]
    if "linear_attn" in tail or "mixer" in tail:
        return [(G.STATE, layer, None)]
    if "attn" in tail or "attention" in tail:
        return [(G.ATTENTION, layer, _part(tail))]
    if "mlp" in tail or "feed_forward" in tail:
        part = _part(tail)
        if part is None:  # the whole MLP block: dense FFN, or the MoE block's parts
            return [(G.DENSE_FFN, layer, None), (G.EXPERTS, layer, None), (G.SHARED_EXPERTS, layer, None)]
        return [(G.DENSE_FFN, layer, part)]
    if layer is not None and tail.strip(".*0123456789") == "":
        return [(g, layer, None) for g in (G.ATTENTION, G.STATE, G.DENSE_FFN, G.SHARED_EXPERTS, G.EXPERTS)]
    raise Unsupported(f"quantization exclusion {pattern!r} names no module the estimator counts")


_PARTS = (
    "q_a_proj",
    "q_b_proj",
    "kv_a_proj_with_mqa",
    "kv_b_proj",
    "qkv_proj",
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "wq_b",
    "wk",
    "weights_proj",
    "indexers_proj",
    "gate_up_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
)


def _part(tail: str) -> str | None:
    for name in _PARTS:
        if tail.endswith(name) or tail.endswith(name + "*") or f"{name}." in tail or f"{name}$" in tail:
            return name
    return None


# ---- parameters of what a pattern covers -----------------------------------------------------------
def _attention_parts(model: ModelConfig, g: AttentionLayers) -> dict[str, int]:
    """Parameters of the named projections of one attention layer (biases with their matrix)."""
    h = model.hidden_size
    assert g.num_heads is not None and g.num_kv_heads is not None
    assert g.head_dim is not None and g.v_head_dim is not None
    if model.mla is not None:
        m = model.mla
        qk = m.qk_nope_head_dim + m.qk_rope_head_dim
        parts = {
            "kv_a_proj_with_mqa": h * (m.kv_lora_rank + m.qk_rope_head_dim),
            "kv_b_proj": m.kv_lora_rank * g.num_heads * (m.qk_nope_head_dim + m.v_head_dim),
            "o_proj": g.num_heads * m.v_head_dim * h,
        }
        if m.q_lora_rank is not None:
            parts["q_a_proj"] = h * m.q_lora_rank
            parts["q_b_proj"] = m.q_lora_rank * g.num_heads * qk
        else:
            parts["q_proj"] = h * g.num_heads * qk
        if g.indexer and model.sparse_attention is not None and m.q_lora_rank is not None:
            s = model.sparse_attention
            parts["wq_b"] = m.q_lora_rank * s.index_heads * s.index_head_dim
            parts["wk"] = h * s.index_head_dim
            parts["weights_proj"] = parts["indexers_proj"] = h * s.index_heads
        return parts
    q = g.num_heads * g.head_dim * (2 if model.attention_output_gate else 1)
    k = g.num_kv_heads * g.head_dim
    v = 0 if g.shared_kv else g.num_kv_heads * g.v_head_dim
    bias = model.attention_bias
    return {
        "q_proj": h * q + (q if bias else 0),
        "k_proj": h * k + (k if bias else 0),
        "v_proj": h * v + (v if bias else 0),
        "qkv_proj": h * (q + k + v) + (q + k + v if bias else 0),
        "o_proj": g.num_heads * g.v_head_dim * h,
    }


@dataclass(frozen=True)
class Roles:
    """Per layer: its attention group (index), state kind, and FFN kind."""

    mixers: tuple[Any, ...]  # int (attention group), "linear", "mamba" or None
    ffn: tuple[str | None, ...]  # "dense", "moe", "both" or None


def default_roles(model: ModelConfig, moe_layers: frozenset[int] | None) -> Roles:
    """Roles of a model whose parser gave none: attention everywhere (every group's layers have the
    same parameters), MoE where its pattern (or ``moe_layers``) says."""
    n = model.num_layers
    mixers = tuple(0 for _ in range(n))
    if model.moe is None:
        return Roles(mixers, tuple("dense" for _ in range(n)))
    if moe_layers is None:
        m = model.moe
        moe_layers = frozenset(
            i
            for i in range(n)
            if i >= m.first_dense_layers
            and (i - m.first_dense_layers) % m.layer_interval == m.layer_interval - 1
        )
    return Roles(mixers, tuple("moe" if i in moe_layers else "dense" for i in range(n)))


def _layer_params(model: ModelConfig, roles: Roles, group: WeightGroup, layer: int, part: str | None) -> int:
    """Parameters of ``group`` in layer ``layer`` (of its sub-module ``part`` when named)."""
    if layer >= model.num_layers:
        return 0  # an MTP layer: not served, not counted
    mixer, ffn = roles.mixers[layer], roles.ffn[layer]
    h = model.hidden_size
    if group is G.ATTENTION:
        if not isinstance(mixer, int):
            return 0
        g = model.attention_groups[mixer]
        if part is None:
            return model.attention_group_params(g)
        parts = _attention_parts(model, g)
        if part not in parts:
            raise Unsupported(f"attention sub-module {part!r} is not one the estimator counts")
        return parts[part]
    if group is G.STATE:
        if mixer == "linear" and model.linear_attention is not None:
            return model.linear_attention.params_per_layer(h)
        if mixer == "mamba" and model.mamba is not None:
            return model.mamba.params_per_layer(h)
        return 0
    if group is G.DENSE_FFN:
        if ffn not in ("dense", "both"):
            return 0
        return _ffn_part(model, model.dense_ffn_params, part)
    if ffn not in ("moe", "both") or model.moe is None:
        return 0
    if group is G.EXPERTS:
        return _ffn_part(model, model.moe.num_experts * model.expert_params, part)
    if group is G.SHARED_EXPERTS:
        return _ffn_part(model, model.shared_expert_params, part)
    if group is G.ROUTER:
        return model.router_params
    return 0


def _ffn_part(model: ModelConfig, params: int, part: str | None) -> int:
    if part is None:
        return params
    mats = model.ffn_matrices
    share = {"gate_up_proj": 2, "gate_proj": 1, "up_proj": 1, "down_proj": 1}.get(part)
    if share is None:
        raise Unsupported(f"FFN sub-module {part!r} is not one the estimator counts")
    return params * min(share, mats) // mats


def checkpoint_weights(
    model: ModelConfig, storage: Storage, dtype: str, roles: Roles
) -> tuple[str, str | None, CheckpointWeights]:
    """(weights format, experts format, per-group bytes) of ``model`` stored as ``storage``, its
    other parameters in the checkpoint's ``dtype``."""
    counts = dict(model.params_by_group)
    whole: set[WeightGroup] = set()
    # (group, layer) → the sub-modules excluded there (None: all of it).
    named: dict[tuple[WeightGroup, int], set[str | None]] = {}
    for pattern in storage.exclusions:
        for group, layer, part in classify(pattern):
            if group not in storage.groups and group not in storage.overrides:
                continue
            if layer is None and part is None:
                whole.add(group)
                continue
            for i in range(model.num_layers) if layer is None else (layer,):
                named.setdefault((group, i), set()).add(part)
    excluded: dict[WeightGroup, int] = {}
    for (group, layer), parts in named.items():
        if group in whole:
            continue
        full = _layer_params(model, roles, group, layer, None)
        if None in parts:
            cut = full
        else:
            if "gate_up_proj" in parts:
                parts = (parts - {"gate_up_proj"}) | {"gate_proj", "up_proj"}
            if "qkv_proj" in parts:
                parts = (parts - {"qkv_proj"}) | {"q_proj", "k_proj", "v_proj"}
            cut = min(full, sum(_layer_params(model, roles, group, layer, p) for p in parts))
        excluded[group] = excluded.get(group, 0) + cut
    plain = _DTYPE_BYTES.get(dtype, 2.0)
    per_group: list[tuple[WeightGroup, float]] = []
    for group in G:
        total = counts[group]
        fmt_size = storage.overrides.get(group)
        if fmt_size is None and group in storage.groups:
            fmt_size = (storage.fmt, storage.bytes_per_param)
        if fmt_size is None or group in whole or total == 0:
            per_group.append((group, plain if (fmt_size is None or group in whole) else fmt_size[1]))
            continue
        cut = min(excluded.get(group, 0), total)
        per_group.append((group, (cut * plain + (total - cut) * fmt_size[1]) / total))
    stored = dict(per_group)

    def name(group: WeightGroup) -> str:
        fmt = storage.overrides.get(group, (storage.fmt, 0.0))[0]
        quantized = stored[group] != plain and (group in storage.groups or group in storage.overrides)
        return fmt if quantized else dtype

    main = max((G.ATTENTION, G.DENSE_FFN, G.STATE), key=lambda g: counts[g])
    weights = name(main)
    experts = name(G.EXPERTS) if model.moe is not None else None
    return (
        weights,
        experts if experts != weights else None,
        CheckpointWeights(
            method=storage.method,
            quantized_format=storage.fmt,
            bytes_per_param=tuple(per_group),
            kv_cache_format=storage.kv_cache_format,
        ),
    )


def quantization_fields(model: ModelConfig, q: Fields, dtype: str, roles: Roles) -> dict[str, Any]:
    """ModelConfig fields for a checkpoint quantized as ``q`` describes."""
    storage = read_storage(q)
    weights, experts, checkpoint = checkpoint_weights(model, storage, dtype, roles)
    return {"native_weight_precision": weights, "native_expert_precision": experts, "checkpoint": checkpoint}


def sidecar(data: Mapping[str, Any]) -> Mapping[str, Any]:
    """The quantization block of a sidecar file: ModelOpt's ``hf_quant_config.json`` nests it under
    ``quantization``; AutoAWQ's ``quant_config.json`` and GPTQ's ``quantize_config.json`` are it."""
    inner = data.get("quantization")
    return inner if isinstance(inner, Mapping) else data
