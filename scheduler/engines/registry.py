"""The engine registry: images per engine and build, device resources per vendor, the P/D connectors
and routers (``data/engines.yaml``, each figure with its source), as typed, frozen objects.

Pure: placement reads it offline (which pools an engine can run on, which pool pairs can hand KV to
each other, under which TP rule) and so do the manifest builders (images, commands, arguments).
"""

from __future__ import annotations

from enum import StrEnum
from functools import cache
from importlib import resources
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.alias_generators import to_camel


class TpRule(StrEnum):
    """How the prefill and decode TP degrees of a pair must relate for a connector."""

    ANY = "any"
    EQUAL = "equal"
    DECODE_AT_LEAST_PREFILL = "decode-at-least-prefill"

    def allows(self, prefill_tp: int, decode_tp: int) -> bool:
        if self is TpRule.EQUAL:
            return prefill_tp == decode_tp
        if self is TpRule.DECODE_AT_LEAST_PREFILL:
            return decode_tp >= prefill_tp
        return True

    def describe(self) -> str:
        return {
            TpRule.ANY: "any TP",
            TpRule.EQUAL: "equal prefill and decode TP",
            TpRule.DECODE_AT_LEAST_PREFILL: "decode TP ≥ prefill TP",
        }[self]


class Support(StrEnum):
    SUPPORTED = "supported"
    EXPERIMENTAL = "experimental"


class _Data(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


class Vendor(_Data):
    device_resource: str = Field(min_length=1)
    build: str = Field(min_length=1)
    source: str = Field(min_length=1)


class Build(_Data):
    image: str = Field(min_length=1)
    source: str = Field(min_length=1)
    env: dict[str, str] = Field(default_factory=dict)
    kv_cache_env: str | None = None  # CPU builds: the variable sizing the KV cache in GiB


class SideChannel(_Data):
    host_env: str
    port_env: str
    port: int = Field(ge=1, le=65535)


class Connector(_Data):
    args: tuple[str, ...] = ()
    config: dict[str, Any] = Field(default_factory=dict)
    roles: dict[str, str]
    tp: TpRule
    host_staging: bool = False
    side_channel: SideChannel | None = None
    pairs: dict[str, Support] = Field(default_factory=dict)
    router_kv_connector: str | None = None
    source: str = Field(min_length=1)

    @model_validator(mode="after")
    def _check(self) -> Connector:
        if set(self.roles) != {"prefill", "decode"}:
            raise ValueError("roles: give exactly prefill and decode")
        bad = sorted(set(self.pairs) - {"gpu-gpu", "cpu-cpu", "cpu-gpu"})
        if bad:
            raise ValueError(f"pairs: unknown pair(s) {bad} (known: gpu-gpu, cpu-cpu, cpu-gpu)")
        return self

    def pair_support(self, kind_a: str, kind_b: str) -> Support | None:
        """How this connector supports moving KV between two kinds of hardware (None: never)."""
        key = "-".join(sorted((kind_a, kind_b)))
        return self.pairs.get(key)


class Disaggregation(_Data):
    default: str
    connectors: dict[str, Connector]
    bootstrap_port: int | None = Field(default=None, ge=1, le=65535)
    bootstrap_annotation: str | None = None

    @model_validator(mode="after")
    def _default_known(self) -> Disaggregation:
        if self.default not in self.connectors:
            raise ValueError(f"default: {self.default!r} is not one of the connectors")
        return self


class Router(_Data):
    name: str
    image: str
    command: tuple[str, ...]
    args: tuple[str, ...]
    port: int = Field(ge=1, le=65535)
    metrics_port: int = Field(ge=1, le=65535)
    health: str = "/health"
    source: str = Field(min_length=1)


class EngineProfile(_Data):
    """One engine: how to run it (command, arguments, port), its image per build, its P/D wiring."""

    key: str = ""
    name: str
    version: str
    source: str = Field(min_length=1)
    command: tuple[str, ...]
    args: tuple[str, ...]
    port: int = Field(default=8000, ge=1, le=65535)
    health: str = "/health"
    builds: dict[str, Build]
    pd: Disaggregation
    router: Router

    def connector(self, name: str | None) -> Connector:
        """The named connector, or the engine's default; KeyError naming the known ones."""
        key = name or self.pd.default
        try:
            return self.pd.connectors[key]
        except KeyError:
            raise KeyError(
                f"engine {self.key} has no KV connector {key!r} (known: {', '.join(sorted(self.pd.connectors))})"
            ) from None


class Registry(_Data):
    vendors: dict[str, Vendor]
    engines: dict[str, EngineProfile]

    def engine(self, key: str) -> EngineProfile:
        try:
            return self.engines[key]
        except KeyError:
            raise KeyError(f"no engine profile {key!r} (known: {', '.join(sorted(self.engines))})") from None

    def vendor_of_resource(self, resource: str) -> str | None:
        for key, v in self.vendors.items():
            if v.device_resource == resource:
                return key
        return None

    def device_resources(self) -> tuple[str, ...]:
        """Every vendor's device resource (a node's devices are the sum of these)."""
        return tuple(sorted({v.device_resource for v in self.vendors.values()}))


def parse_registry(doc: Any, where: str = "engines.yaml") -> Registry:
    """A registry from its YAML document; ValueError naming the field."""
    try:
        reg = Registry.model_validate(doc)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise ValueError(f"{where}: {problems}") from None
    engines = {k: v.model_copy(update={"key": k}) for k, v in reg.engines.items()}
    return reg.model_copy(update={"engines": engines})


@cache
def registry() -> Registry:
    """The built-in registry (``data/engines.yaml``), read once."""
    text = resources.files("hetsched.scheduler.engines").joinpath("data/engines.yaml").read_text("utf-8")
    return parse_registry(yaml.safe_load(text))


def get_engine(key: str) -> EngineProfile:
    return registry().engine(key)


def has_profile(key: str | None) -> bool:
    return key is not None and key in registry().engines
