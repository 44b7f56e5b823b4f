"""Typed, bounded access to a parsed ``config.json``: every error names the file and the field."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

# Real models have at most a few hundred layers; the bound keeps the per-layer loops (and a hostile
# ConfigMap) from taking minutes or gigabytes.
MAX_LAYERS = 1024
# No dimension, count or id of a real config comes near this; larger ones only overflow the estimate.
MAX_INTEGER = 10**9
# Longest list read (layer types, exclusion lists: GLM-5-FP8 lists 712 modules) and longest string.
MAX_ITEMS = 65_536
MAX_TEXT = 1_000


class Unsupported(ValueError):
    """The config describes something the estimator does not model; the message names it."""


class Fields:
    """Typed access to one (possibly nested) config mapping, with errors that name the field."""

    def __init__(self, data: Mapping[str, Any], origin: str, prefix: str = "") -> None:
        self.data = data
        self.origin = origin
        self.prefix = prefix

    def error(self, message: str) -> ValueError:
        return ValueError(f"{self.origin}: {message}")

    def unsupported(self, message: str) -> Unsupported:
        return Unsupported(f"{self.origin}: {message}")

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

    def opt_positive(self, key: str) -> int | None:
        return self.positive(key) if self.has(key) else None

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
        if not isinstance(value, str) or len(value) > MAX_TEXT:
            raise self.error(f"field '{self.name(key)}' must be a string (at most {MAX_TEXT} characters)")
        return value

    def items(self, key: str) -> list[Any] | None:
        if not self.has(key):
            return None
        value = self.data[key]
        if not isinstance(value, list):
            raise self.error(f"field '{self.name(key)}' must be a list, got {value!r}")
        if len(value) > MAX_ITEMS:
            raise self.error(f"field '{self.name(key)}' has {len(value)} entries (at most {MAX_ITEMS})")
        return value

    def integers(self, key: str) -> list[int] | None:
        values = self.items(key)
        if values is None:
            return None
        if not all(isinstance(v, int) and not isinstance(v, bool) and abs(v) <= MAX_INTEGER for v in values):
            raise self.error(f"field '{self.name(key)}' must be a list of integers")
        return values

    def strings(self, key: str) -> list[str] | None:
        values = self.items(key)
        if values is None:
            return None
        if not all(isinstance(v, str) and len(v) <= MAX_TEXT for v in values):
            raise self.error(f"field '{self.name(key)}' must be a list of strings")
        return values

    def types(self, key: str, layers: int, known: tuple[str, ...]) -> list[str] | None:
        """A per-layer list of names (``layer_types``): one entry per layer, each a known type;
        an unknown one is refused by name (it is a layer kind the estimator does not model)."""
        values = self.items(key)
        if values is None:
            return None
        if len(values) != layers:
            raise self.error(f"field '{self.name(key)}' has {len(values)} entries for {layers} layers")
        for value in values:
            if not isinstance(value, str):
                raise self.error(f"field '{self.name(key)}' must be a list of strings")
            if value not in known:
                raise self.unsupported(
                    f"layer type {value!r} (field '{self.name(key)}') is not modelled; "
                    f"modelled here: {', '.join(known)}"
                )
        return [str(v) for v in values]

    def sub(self, key: str) -> Fields:
        value = self.raw(key)
        if not isinstance(value, Mapping):
            raise self.error(f"field '{self.name(key)}' must be an object, got {type(value).__name__}")
        return Fields(value, self.origin, f"{self.name(key)}.")

    def opt_sub(self, key: str) -> Fields | None:
        return self.sub(key) if self.has(key) else None


def read_json(source: str | os.PathLike[str]) -> tuple[dict[str, Any], str]:
    """A config file (or the ``config.json`` of a directory) and the path it was read from, read
    within bounds (size, nesting, integer digits: ``catalog.config_input``)."""
    from hetsched.scheduler.catalog.config_input import loads_bounded, read_bounded_file

    path = Path(source)
    if path.is_dir():
        path = path / "config.json"
    data = loads_bounded(read_bounded_file(path), what=str(path))
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object at the top level, got {type(data).__name__}")
    return data, str(path)
