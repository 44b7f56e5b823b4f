"""Catalogs: models, hardware and agent profiles, each number with its source.

Types (``models``, ``hardware``, ``agents``), their entries (``model_catalog``, ``hardware_catalog``
reading ``data/hardware.yaml``, ``agent_catalog``) and the Hugging Face ``config.json`` reader
(``hf_config``). This package's functions are thin, lazily imported access to them: the catalog
modules are imported on first use so that the planner's pure parts (and their tests, which build
small ``ModelConfig``/``HardwareSpec`` objects inline) do not depend on them.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any, cast

from hetsched.scheduler.catalog.agents import AgentProfile
from hetsched.scheduler.catalog.hardware import HardwareSpec
from hetsched.scheduler.catalog.models import ModelConfig

_CATALOG = "hetsched.scheduler.catalog."


def _module(name: str) -> Any:
    return importlib.import_module(_CATALOG + name)


def get_model(name: str) -> ModelConfig:
    """A catalog model by key or Hugging Face id (ValueError with close names when unknown)."""
    return cast(ModelConfig, _module("model_catalog").get_model(name))


def load_hf_config(source: Any, name: str | None = None) -> ModelConfig:
    """A model from a Hugging Face ``config.json`` (path or parsed mapping)."""
    return cast(ModelConfig, _module("hf_config").load_hf_config(source, name))


def get_hardware(name: str) -> HardwareSpec | None:
    """The catalog hardware entry ``name``, or None when the catalog has no such entry."""
    try:
        hw = _module("hardware_catalog").get_hardware(name)
    except (KeyError, ValueError, LookupError):
        return None
    return cast(HardwareSpec, hw)


def hardware_for_gfd_product(product: str) -> HardwareSpec | None:
    """The catalog entry whose ``gfd_products`` lists an ``nvidia.com/gpu.product`` label value."""
    try:
        hw = _module("hardware_catalog").hardware_for_gfd_product(product)
    except (KeyError, ValueError, LookupError):
        return None
    return cast("HardwareSpec | None", hw)


def parse_custom_hardware(entries: list[dict[str, Any]]) -> dict[str, HardwareSpec]:
    """Custom ``hardware:`` entries of a pool file, keyed by name.

    Read with the hardware catalog's loader (human units, ``basedOn:``), the same format as
    ``--hardware-file``.
    """
    if not entries:
        return {}
    specs = cast("list[HardwareSpec]", _module("hardware_catalog").hardware_from_entries(entries))
    return {hw.name: hw for hw in specs}


def get_agent(name: str) -> AgentProfile:
    """An agent profile by name (chatbot, coding, web-use, computer-use, ...)."""
    return cast(AgentProfile, _module("agent_catalog").get_agent(name))


def apply_overrides(profile: AgentProfile, overrides: Mapping[str, Any]) -> AgentProfile:
    """The profile with the workload's token overrides (snake_case keys; None values ignored)."""
    update = {k: v for k, v in overrides.items() if v is not None}
    if not update:
        return profile
    try:
        module = _module("agent_catalog")
    except ImportError:
        module = None
    fn = getattr(module, "apply_overrides", None) if module is not None else None
    if fn is not None:
        return cast(AgentProfile, fn(profile, update))
    return AgentProfile.model_validate({**profile.model_dump(), **update})
