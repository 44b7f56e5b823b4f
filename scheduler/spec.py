"""The AgentWorkload spec: one pydantic model for the CLI, the planner and the CRD schema.

Field names are camelCase on the wire (Kubernetes convention) and snake_case in Python. The CRD in
``crds/`` is generated from these models (``hetsched crds``); the API server validates with that
schema and the CEL rules attached here via ``json_schema_extra``.
"""

from __future__ import annotations

import re
from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import yaml
from hetsched.scheduler.catalog.hardware import DeviceKind
from hetsched.scheduler.engines.platform import PoolServing
from hetsched.scheduler.engines.registry import registry
from hetsched.scheduler.estimator.precision import Precision
from hetsched.scheduler.units import kube_quantity
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.alias_generators import to_camel

API_GROUP = "hetsched.io"
API_VERSION = "v1alpha1"
KIND = "AgentWorkload"
PROFILE_KIND = "AcceleratorProfile"

# What the API server refuses in the children's pod template, refused here first (the CRD's CEL rules
# and the models use the same patterns; CEL's RE2 and Python's re read them alike):
# * environment variable names: printable ASCII other than '=' (Kubernetes' relaxed rule, GA in 1.34);
ENV_NAME_PATTERN = r"^[ -<>-~]+$"
# * image references, as the kubelet parses them (distribution/reference: [host[:port]/]path[:tag][@digest],
#   the path in lower case); the API server stores any string, the kubelet then fails InvalidImageName;
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_HOST_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_HOST = rf"(?:{_HOST_COMPONENT}(?:\.{_HOST_COMPONENT})*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?"
IMAGE_PATTERN = (
    rf"^(?:{_HOST}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?"
    r"(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,})?$"
)
# * resource names of a container: the standard ones, hugepages-<size>, or extended resources
#   (<domain>/<name>, not in the kubernetes.io domain), which cannot be overcommitted.
STANDARD_RESOURCES = ("cpu", "memory", "ephemeral-storage")
EXTENDED_RESOURCE_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"


def _cel_string(pattern: str) -> str:
    """A pattern as a CEL string literal."""
    return "'" + pattern.replace("\\", "\\\\").replace("'", "\\'") + "'"


# The CEL rule the API server checks an image reference with (the models check the same pattern).
_IMAGE_RULE: dict[str, Any] = {
    "x-kubernetes-validations": [
        {
            "rule": f"self.matches({_cel_string(IMAGE_PATTERN)})",
            "message": "not an image reference the kubelet can pull: [registry[:port]/]name[:tag][@digest], "
            "the name in lower case",
        }
    ]
}


# Bounded strings and lists: the API server estimates the cost of every CEL rule from these bounds.
PoolName = Annotated[str, Field(min_length=1, max_length=63)]
Arg = Annotated[str, Field(max_length=4096)]
Quantity = Annotated[
    str,
    Field(
        min_length=1,
        max_length=64,
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "isQuantity(self) && !quantity(self).isLessThan(quantity('0'))",
                    "message": "must be a non-negative Kubernetes quantity, such as 500m, 2, 1.5Gi or 1e3",
                }
            ]
        },
    ),
]
ResourceList = Annotated[
    dict[str, Quantity],
    Field(
        max_length=32,
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "self.all(k, k in ['cpu', 'memory', 'ephemeral-storage'] || k.startsWith('hugepages-')"
                    f" || (k.matches({_cel_string(EXTENDED_RESOURCE_PATTERN)}) && !k.contains('kubernetes.io/')))",
                    "message": "resource names are cpu, memory, ephemeral-storage, hugepages-<size> or "
                    "<domain>/<name> (an extended resource)",
                },
                {
                    "rule": "self.all(k, !k.contains('/') || !isQuantity(self[k]) || quantity(self[k]).isInteger())",
                    "message": "extended resources (<domain>/<name>) take whole numbers",
                },
            ]
        },
    ),
]


class _Spec(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


class DisaggregationMode(StrEnum):
    AUTO = "auto"
    ALWAYS = "always"
    NEVER = "never"


class ConfigMapModelRef(_Spec):
    """A ConfigMap in the workload's namespace holding a Hugging Face config.json."""

    name: str = Field(min_length=1, max_length=253)
    key: str = Field(default="config.json", min_length=1, max_length=253)


class ModelRef(_Spec):
    """Exactly one of ``name`` (catalog name or Hugging Face id) and ``configMap``."""

    name: str | None = Field(default=None, min_length=1, max_length=200)
    config_map: ConfigMapModelRef | None = None

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "has(self.name) != has(self.configMap)",
                    "message": "set exactly one of name and configMap",
                }
            ]
        }
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> ModelRef:
        if (self.name is None) == (self.config_map is None):
            raise ValueError("set exactly one of name and configMap")
        return self


class AgentOverrides(_Spec):
    """Per-workload overrides of the agent profile's token figures."""

    prompt_tokens: int | None = Field(default=None, ge=1, le=10_000_000)
    output_tokens: int | None = Field(default=None, ge=1, le=1_000_000)
    turns_per_task: int | None = Field(default=None, ge=1, le=10_000)
    initial_context_tokens: int | None = Field(default=None, ge=0, le=10_000_000)
    context_growth_per_turn: int | None = Field(default=None, ge=0, le=10_000_000)


class AgentSpec(_Spec):
    profile: str = Field(
        min_length=1, max_length=63, description="chatbot, coding, web-use, computer-use, ..."
    )
    overrides: AgentOverrides = Field(default_factory=AgentOverrides)


class PrecisionSpec(_Spec):
    weights: Precision | None = Field(default=None, description="default: the checkpoint's native format")
    kv_cache: Precision = Precision.BF16
    activations: Precision = Precision.BF16


class DemandSpec(_Spec):
    """How much traffic the workload must carry: exactly one of the two."""

    requests_per_second: float | None = Field(default=None, gt=0, le=1_000_000)
    concurrent_sessions: int | None = Field(default=None, ge=1, le=10_000_000)

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "has(self.requestsPerSecond) != has(self.concurrentSessions)",
                    "message": "set exactly one of requestsPerSecond and concurrentSessions",
                }
            ]
        }
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> DemandSpec:
        if (self.requests_per_second is None) == (self.concurrent_sessions is None):
            raise ValueError("set exactly one of requestsPerSecond and concurrentSessions")
        return self


class SLOSpec(_Spec):
    ttft_seconds: float = Field(gt=0, le=3600, description="time to first token, seconds")
    tpot_seconds: float = Field(gt=0, le=60, description="time per output token, seconds")

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "self.ttftSeconds >= self.tpotSeconds",
                    "message": "slo.ttftSeconds must be at least slo.tpotSeconds: the first token needs the "
                    "prompt's prefill, which takes longer than one decode step",
                }
            ]
        }
    )

    @model_validator(mode="after")
    def _ttft_covers_tpot(self) -> SLOSpec:
        if self.ttft_seconds < self.tpot_seconds:
            raise ValueError(
                "slo.ttftSeconds must be at least slo.tpotSeconds: the first token needs the prompt's "
                "prefill, which takes longer than one decode step"
            )
        return self


class PoolConstraints(_Spec):
    """Pool names each phase may use (empty: any) and pools to avoid."""

    prefill: list[PoolName] = Field(default_factory=list, max_length=64)
    decode: list[PoolName] = Field(default_factory=list, max_length=64)
    exclude: list[PoolName] = Field(default_factory=list, max_length=64)

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "!has(self.prefill) || !has(self.exclude) || self.prefill.all(p, !(p in self.exclude))",
                    "message": "pools.prefill names a pool that pools.exclude excludes",
                },
                {
                    "rule": "!has(self.decode) || !has(self.exclude) || self.decode.all(p, !(p in self.exclude))",
                    "message": "pools.decode names a pool that pools.exclude excludes",
                },
            ]
        }
    )

    @model_validator(mode="after")
    def _no_overlap(self) -> PoolConstraints:
        for phase in ("prefill", "decode"):
            both = sorted(set(getattr(self, phase)) & set(self.exclude))
            if both:
                raise ValueError(f"pools.{phase} names a pool that pools.exclude excludes: {', '.join(both)}")
        return self


class EnvVar(_Spec):
    name: str = Field(
        min_length=1,
        max_length=253,
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": f"self.matches({_cel_string(ENV_NAME_PATTERN)})",
                    "message": "environment variable names are printable ASCII characters other than '='",
                }
            ]
        },
    )
    value: str = Field(default="", max_length=32768)

    @model_validator(mode="after")
    def _check(self) -> EnvVar:
        if not re.fullmatch(ENV_NAME_PATTERN, self.name):
            raise ValueError(
                f"env name {self.name!r}: environment variable names are printable ASCII characters other than '='"
            )
        return self


#: Extended resources the plan sets (TP devices per replica): never in a container's resources.
DEVICE_RESOURCES = registry().device_resources()
_DEVICE_LIST = "[" + ", ".join(f"'{r}'" for r in DEVICE_RESOURCES) + "]"


class ContainerSpec(_Spec):
    """The serving container of one phase. ``args`` may use {model}, {served_model_name}, {tp},
    {max_batch}, {max_model_len}, {phase}, {host} and {port}, filled in from the plan, and the P/D
    wiring's {kv_transfer_config}, {kv_role}, {side_channel_port}, {pd_role} and {bootstrap_port}
    (docs/serving.md)."""

    image: str | None = Field(
        default=None,
        min_length=1,
        max_length=512,
        description="default: the engine's image for the pool's hardware (CUDA, ROCm or CPU build)",
        json_schema_extra=_IMAGE_RULE,
    )
    args: list[Arg] = Field(
        default_factory=list,
        max_length=128,
        description="default: the engine's arguments; the P/D wiring is appended unless they use its placeholders",
    )
    extra_args: list[Arg] = Field(
        default_factory=list, max_length=64, description="appended to the arguments (the engine's or args)"
    )
    port: int = Field(default=8000, ge=1, le=65535)
    env: list[EnvVar] = Field(
        default_factory=list,
        max_length=128,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    resources: dict[str, ResourceList] = Field(
        default_factory=dict,
        max_length=2,
        description="requests/limits besides the devices (nvidia.com/gpu, amd.com/gpu, ...), which the plan sets",
    )

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "!has(self.resources) || self.resources.all(k, k == 'requests' || k == 'limits')",
                    "message": "resources: only requests and limits may be set",
                },
                {
                    "rule": "!has(self.resources) || self.resources.all(k, self.resources[k].all(r, !(r in "
                    + _DEVICE_LIST
                    + ")))",
                    "message": "resources: leave out device resources (nvidia.com/gpu, amd.com/gpu, ...), the "
                    "plan sets them to the tensor-parallel degree",
                },
                {
                    "rule": "!has(self.resources) || !('requests' in self.resources) || !('limits' in self.resources)"
                    " || self.resources['requests'].all(k, !(k in self.resources['limits'])"
                    " || !isQuantity(self.resources['requests'][k]) || !isQuantity(self.resources['limits'][k])"
                    " || quantity(self.resources['requests'][k]).compareTo(quantity(self.resources['limits'][k])) <= 0)",
                    "message": "resources: every request must be at most its limit",
                },
                {
                    "rule": "!has(self.resources) || !('requests' in self.resources)"
                    " || self.resources['requests'].all(k, !(k.contains('/') || k.startsWith('hugepages-'))"
                    " || ('limits' in self.resources && k in self.resources['limits']"
                    " && isQuantity(self.resources['requests'][k]) && isQuantity(self.resources['limits'][k])"
                    " && quantity(self.resources['requests'][k]).compareTo(quantity(self.resources['limits'][k])) == 0))",
                    "message": "resources: extended resources (<domain>/<name>) and hugepages cannot be overcommitted: "
                    "give each request a limit equal to it",
                },
            ]
        }
    )

    @model_validator(mode="after")
    def _check(self) -> ContainerSpec:
        if self.image is not None and not re.fullmatch(IMAGE_PATTERN, self.image):
            raise ValueError(
                f"image {self.image!r}: not an image reference the kubelet can pull: "
                "[registry[:port]/]name[:tag][@digest], the name in lower case"
            )
        names = [e.name for e in self.env]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"env: duplicate names {', '.join(dupes)}")
        values: dict[str, dict[str, Decimal]] = {}
        for key, quantities in self.resources.items():
            if key not in ("requests", "limits"):
                raise ValueError("resources: only requests and limits may be set")
            if any(r in quantities for r in DEVICE_RESOURCES):
                raise ValueError(
                    "resources: leave out device resources (nvidia.com/gpu, amd.com/gpu, ...), the plan "
                    "sets them to the tensor-parallel degree"
                )
            values[key] = {name: _resource(key, name, q) for name, q in quantities.items()}
        requests, limits = values.get("requests", {}), values.get("limits", {})
        for name, request in requests.items():
            limit = limits.get(name)
            if limit is not None and request > limit:
                raise ValueError(
                    f"resources.requests[{name}]: {self.resources['requests'][name]} is more than "
                    f"its limit {self.resources['limits'][name]}: every request must be at most its limit"
                )
            if ("/" in name or name.startswith("hugepages-")) and limit != request:
                raise ValueError(
                    f"resources.requests[{name}]: extended resources (<domain>/<name>) and hugepages cannot be "
                    "overcommitted: give each request a limit equal to it"
                )
        return self


def _resource(kind: str, name: str, quantity: str) -> Decimal:
    """The value of ``resources.<kind>[<name>]``; ValueError naming it when the API server would refuse it."""
    where = f"resources.{kind}[{name}]"
    known = name in STANDARD_RESOURCES or name.startswith("hugepages-")
    extended = re.fullmatch(EXTENDED_RESOURCE_PATTERN, name) is not None and "kubernetes.io/" not in name
    if not (known or extended):
        raise ValueError(
            f"{where}: resource names are cpu, memory, ephemeral-storage, hugepages-<size> or <domain>/<name> "
            "(an extended resource)"
        )
    try:
        value = kube_quantity(quantity)
    except ValueError:
        raise ValueError(
            f"{where}: {quantity!r} must be a non-negative Kubernetes quantity, such as 500m, 2, 1.5Gi or 1e3"
        ) from None
    if value < 0:
        raise ValueError(f"{where}: {quantity!r} must be a non-negative Kubernetes quantity")
    if "/" in name and value != value.to_integral_value():
        raise ValueError(f"{where}: {quantity!r}: extended resources (<domain>/<name>) take whole numbers")
    return value


class EngineName(StrEnum):
    VLLM = "vllm"
    SGLANG = "sglang"


class KvConnectorName(StrEnum):
    NIXL = "nixl"
    MOONCAKE = "mooncake"


class RouterSpec(_Spec):
    """The P/D router in front of a disaggregated workload (``<name>-router``)."""

    image: str | None = Field(
        default=None,
        min_length=1,
        max_length=512,
        description="default: the engine's router",
        json_schema_extra=_IMAGE_RULE,
    )
    replicas: int = Field(default=1, ge=1, le=16)
    resources: dict[str, ResourceList] = Field(
        default_factory=dict, max_length=2, description="requests/limits (default: 250m/256Mi, limits 2/1Gi)"
    )

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "!has(self.resources) || self.resources.all(k, k == 'requests' || k == 'limits')",
                    "message": "resources: only requests and limits may be set",
                }
            ]
        }
    )

    @model_validator(mode="after")
    def _check(self) -> RouterSpec:
        if self.image is not None and not re.fullmatch(IMAGE_PATTERN, self.image):
            raise ValueError(
                f"router.image {self.image!r}: not an image reference the kubelet can pull: "
                "[registry[:port]/]name[:tag][@digest], the name in lower case"
            )
        for key, quantities in self.resources.items():
            if key not in ("requests", "limits"):
                raise ValueError("resources: only requests and limits may be set")
            for name, q in quantities.items():
                _resource(key, name, q)
        return self


class ServingSpec(_Spec):
    """How the phases are served (docs/serving.md). Containers: ``decode`` defaults to ``prefill``,
    ``colocated`` to ``decode``; a phase without a container runs the engine's image for its pool's
    hardware with the engine's arguments."""

    engine: EngineName | None = Field(
        default=None, description="default: the engine the images name, else vllm"
    )
    model: str | None = Field(
        default=None,
        min_length=1,
        max_length=1024,
        description="what {model} renders to (a path in the image or a volume, an object-store URI); "
        "default: the Hugging Face id of spec.model",
    )
    kv_connector: KvConnectorName | None = Field(
        default=None, description="KV connector between prefill and decode (default: the engine's, nixl)"
    )
    allow_experimental_pairs: bool = Field(
        default=False,
        description="allow prefill/decode pairs the engine only moves KV between experimentally (CPU↔GPU)",
    )
    prefill: ContainerSpec | None = None
    decode: ContainerSpec | None = None
    colocated: ContainerSpec | None = None
    router: RouterSpec | None = None


class AgentWorkloadSpec(_Spec):
    model: ModelRef
    agent: AgentSpec
    max_context_tokens: int | None = Field(
        default=None,
        ge=1,
        le=10_000_000,
        description="longest context served (default: the agent's last turn)",
    )
    max_batch: int | None = Field(
        default=None, ge=1, le=65536, description="upper bound on batch per replica"
    )
    precision: PrecisionSpec = Field(default_factory=PrecisionSpec)
    demand: DemandSpec
    slo: SLOSpec
    disaggregation: DisaggregationMode = DisaggregationMode.AUTO
    pools: PoolConstraints = Field(default_factory=PoolConstraints)
    serving: ServingSpec | None = None

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "!has(self.maxContextTokens) || !has(self.agent.overrides) || "
                    "!has(self.agent.overrides.promptTokens) || "
                    "self.maxContextTokens > self.agent.overrides.promptTokens",
                    "message": "maxContextTokens must exceed agent.overrides.promptTokens: the context holds "
                    "the prompt and the output",
                }
            ]
        }
    )

    @model_validator(mode="after")
    def _context_holds_prompt(self) -> AgentWorkloadSpec:
        prompt = self.agent.overrides.prompt_tokens
        if self.max_context_tokens is not None and prompt is not None and self.max_context_tokens <= prompt:
            raise ValueError(
                "maxContextTokens must exceed agent.overrides.promptTokens: the context holds the prompt "
                "and the output"
            )
        return self


class ObjectMeta(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str = Field(min_length=1, max_length=253)
    namespace: str = "default"


class AgentWorkload(BaseModel):
    """A whole AgentWorkload manifest, as `kubectl apply -f` takes it."""

    model_config = ConfigDict(extra="allow")

    api_version: str = Field(alias="apiVersion")
    kind: str
    metadata: ObjectMeta
    spec: AgentWorkloadSpec

    @model_validator(mode="after")
    def _check_kind(self) -> AgentWorkload:
        if self.kind != KIND:
            raise ValueError(f"kind: expected {KIND}, got {self.kind!r}")
        if self.api_version != f"{API_GROUP}/{API_VERSION}":
            raise ValueError(f"apiVersion: expected {API_GROUP}/{API_VERSION}, got {self.api_version!r}")
        return self


def format_validation_error(exc: ValidationError, prefix: str = "") -> str:
    """One line per problem, each naming the field path in wire (camelCase) form."""
    lines = []
    for err in exc.errors():
        path = ".".join(str(p) for p in err["loc"])
        lines.append(f"{prefix}{path}: {err['msg']}")
    return "; ".join(lines)


def parse_workload(doc: Any, source: str = "<input>") -> AgentWorkload:
    try:
        return AgentWorkload.model_validate(doc)
    except ValidationError as exc:
        raise ValueError(f"{source}: {format_validation_error(exc)}") from None


def load_workloads(path: str | Path) -> list[AgentWorkload]:
    """Read AgentWorkload manifests (one or many YAML documents) from a file."""
    text = Path(path).read_text()
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML: {exc}") from None
    return [parse_workload(d, f"{path}[{i}]") for i, d in enumerate(docs)]


# ---- AcceleratorProfile (cluster-scoped) ---------------------------------------------------------
_HARDWARE_FIGURES = ("memory", "bandwidth", "peak_tflops", "power")


class AcceleratorProfileSpec(_Spec):
    """Hardware figures and price for the nodes of a pool or a GPU product.

    Matches nodes by pool name (``matchPool``, the ``hetsched.io/pool`` label or the pool named
    after a GPU product) and/or by ``nvidia.com/gpu.product`` (``matchGpuProduct``); a pool match
    wins over a product match. The hardware fields are those of a custom hardware entry
    (``hardware_catalog.load_hardware_yaml``): human units (``80GB``, ``3.35TB/s``, ``400Gb/s``,
    ``700W``), ``basedOn`` to start from a catalog entry. With only ``pricePerHour`` the profile
    overrides the price of whatever hardware the pool resolves to.
    """

    match_pool: str | None = Field(default=None, min_length=1, max_length=63, description="pool name")
    match_gpu_product: str | None = Field(
        default=None, min_length=1, max_length=128, description="nvidia.com/gpu.product label value"
    )
    based_on: str | None = Field(
        default=None, min_length=1, max_length=63, description="catalog hardware key"
    )
    name: str | None = Field(
        default=None, min_length=1, max_length=63, description="hardware name (default: the profile's name)"
    )
    description: str | None = Field(default=None, max_length=1024)
    kind: DeviceKind | None = None
    vendor: str | None = Field(default=None, max_length=63, description="NVIDIA, AMD, Intel, ...")
    architecture: str | None = Field(
        default=None,
        min_length=1,
        max_length=63,
        description="device generation (hopper, ampere, cdna3, ...)",
    )
    memory: str | None = Field(default=None, min_length=1, max_length=32, description="per device, e.g. 80GB")
    bandwidth: str | None = Field(
        default=None, min_length=1, max_length=32, description="memory bandwidth per device, e.g. 3.35TB/s"
    )
    peak_tflops: dict[str, float] | None = Field(
        default=None,
        max_length=7,
        description="dense peak TFLOP/s per compute class (fp32, bf16, fp16, fp8, int8, fp4, int4)",
    )
    intra_node_bandwidth: str | None = Field(
        default=None, min_length=1, max_length=32, description="e.g. 900GB/s"
    )
    intra_node_link: str | None = Field(default=None, max_length=128)
    network_bandwidth: str | None = Field(
        default=None, min_length=1, max_length=32, description="e.g. 400Gb/s"
    )
    host_bandwidth: str | None = Field(
        default=None, min_length=1, max_length=32, description="device ↔ host link per direction, e.g. 64GB/s"
    )
    power: str | None = Field(default=None, min_length=1, max_length=32, description="per device, e.g. 700W")
    price_per_hour: float | None = Field(default=None, ge=0, le=10_000, description="USD per device-hour")
    price_source: str | None = Field(default=None, max_length=512)
    source: str | None = Field(default=None, max_length=1024, description="where the figures come from")
    serving: PoolServing | None = Field(
        default=None,
        description="serving overrides for the matched pools: images per engine, device resource, RDMA",
    )

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "has(self.matchPool) || has(self.matchGpuProduct)",
                    "message": "set matchPool or matchGpuProduct (or both)",
                },
                {
                    "rule": "has(self.basedOn) || has(self.pricePerHour) || has(self.memory) || has(self.serving)",
                    "message": "set basedOn, the hardware figures (memory, bandwidth, peakTflops, power), "
                    "pricePerHour alone to override the price, or serving alone to override how pools serve",
                },
                {
                    "rule": "has(self.basedOn) || !(has(self.memory) || has(self.bandwidth) || "
                    "has(self.peakTflops) || has(self.power)) || (has(self.memory) && has(self.bandwidth) "
                    "&& has(self.peakTflops) && has(self.power))",
                    "message": "memory, bandwidth, peakTflops and power are all required unless basedOn "
                    "names a catalog entry",
                },
                {
                    "rule": "!has(self.peakTflops) || self.peakTflops.all(k, k in "
                    "['fp32', 'bf16', 'fp16', 'fp8', 'int8', 'fp4', 'int4'])",
                    "message": "peakTflops keys must be compute classes: fp32, bf16, fp16, fp8, int8, fp4, int4",
                },
            ]
        }
    )

    @model_validator(mode="after")
    def _check(self) -> AcceleratorProfileSpec:
        if self.match_pool is None and self.match_gpu_product is None:
            raise ValueError("set matchPool or matchGpuProduct (or both)")
        figures = [f for f in _HARDWARE_FIGURES if getattr(self, f) is not None]
        if self.based_on is None and self.price_per_hour is None and not figures and self.serving is None:
            raise ValueError(
                "set basedOn, the hardware figures (memory, bandwidth, peakTflops, power), "
                "pricePerHour alone to override the price, or serving alone to override how pools serve"
            )
        if self.based_on is None and figures and len(figures) != len(_HARDWARE_FIGURES):
            raise ValueError(
                "memory, bandwidth, peakTflops and power are all required unless basedOn names a catalog entry"
            )
        known = {"fp32", "bf16", "fp16", "fp8", "int8", "fp4", "int4"}
        bad = sorted(set(self.peak_tflops or {}) - known)
        if bad:
            raise ValueError(
                f"peakTflops keys must be compute classes: {', '.join(sorted(known))} (got {bad})"
            )
        return self

    @property
    def defines_hardware(self) -> bool:
        """False for a price-only profile (it overrides the price, not the hardware)."""
        return self.based_on is not None or any(getattr(self, f) is not None for f in _HARDWARE_FIGURES)

    def hardware_entry(self, default_name: str) -> dict[str, Any]:
        """The custom-hardware entry (``load_hardware_yaml`` format) this profile describes."""
        entry: dict[str, Any] = self.model_dump(
            by_alias=True, exclude_none=True, exclude={"match_pool", "match_gpu_product", "serving"}
        )
        entry.setdefault("name", default_name)
        if "kind" in entry:
            entry["kind"] = str(entry["kind"])
        return entry
