"""The AgentWorkload spec: one pydantic model for the CLI, the planner and the CRD schema.

Field names are camelCase on the wire (Kubernetes convention) and snake_case in Python. The CRD in
``crds/`` is generated from these models (``hetsched crds``); the API server validates with that
schema and the CEL rules attached here via ``json_schema_extra``.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.alias_generators import to_camel

API_GROUP = "hetsched.io"
API_VERSION = "v1alpha1"
KIND = "AgentWorkload"


class _Spec(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


class DisaggregationMode(StrEnum):
    AUTO = "auto"
    ALWAYS = "always"
    NEVER = "never"


class PrecisionName(StrEnum):
    FP32 = "fp32"
    BF16 = "bf16"
    FP16 = "fp16"
    FP8 = "fp8"
    INT8 = "int8"
    INT4 = "int4"
    NVFP4 = "nvfp4"
    MXFP4 = "mxfp4"


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
                {"rule": "has(self.name) != has(self.configMap)", "message": "set exactly one of name and configMap"}
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
    profile: str = Field(min_length=1, max_length=63, description="chatbot, coding, web-use, computer-use, ...")
    overrides: AgentOverrides = Field(default_factory=AgentOverrides)


class PrecisionSpec(_Spec):
    weights: PrecisionName | None = Field(default=None, description="default: the checkpoint's native format")
    kv_cache: PrecisionName = PrecisionName.BF16
    activations: PrecisionName = PrecisionName.BF16


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


class PoolConstraints(_Spec):
    """Pool names each phase may use (empty: any) and pools to avoid."""

    prefill: list[str] = Field(default_factory=list, max_length=64)
    decode: list[str] = Field(default_factory=list, max_length=64)
    exclude: list[str] = Field(default_factory=list, max_length=64)


class EnvVar(_Spec):
    name: str = Field(min_length=1, max_length=253)
    value: str = Field(default="", max_length=32768)


class ContainerSpec(_Spec):
    """The serving container of one phase. ``args`` may use {model}, {tp}, {max_batch},
    {max_model_len}, {phase} and {port}, filled in from the plan."""

    image: str = Field(min_length=1, max_length=512)
    args: list[str] = Field(default_factory=list, max_length=128)
    port: int = Field(default=8000, ge=1, le=65535)
    env: list[EnvVar] = Field(default_factory=list, max_length=128)
    resources: dict[str, dict[str, str]] = Field(
        default_factory=dict, description="requests/limits besides nvidia.com/gpu, which the plan sets"
    )


class ServingSpec(_Spec):
    """Containers for the phases; ``decode`` defaults to ``prefill`` (and ``colocated`` to ``decode``)."""

    prefill: ContainerSpec
    decode: ContainerSpec | None = None
    colocated: ContainerSpec | None = None


class AgentWorkloadSpec(_Spec):
    model: ModelRef
    agent: AgentSpec
    max_context_tokens: int | None = Field(
        default=None, ge=1, le=10_000_000, description="longest context served (default: the agent's last turn)"
    )
    max_batch: int | None = Field(default=None, ge=1, le=65536, description="upper bound on batch per replica")
    precision: PrecisionSpec = Field(default_factory=PrecisionSpec)
    demand: DemandSpec
    slo: SLOSpec
    disaggregation: DisaggregationMode = DisaggregationMode.AUTO
    pools: PoolConstraints = Field(default_factory=PoolConstraints)
    serving: ServingSpec | None = None


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
