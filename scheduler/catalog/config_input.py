"""Untrusted model configs — a tenant's ConfigMap, a file given to the CLI — read with bounds.

``json.loads`` alone is not safe on such input: deeply nested arrays raise ``RecursionError``, an
integer of 5,000 digits ``ValueError`` (Python's limit on integer strings), ``NaN`` and
``Infinity`` are accepted, and the size is whatever the sender chose. And the config reader
(``hf_config``) grows with every model family, so a failure it does not anticipate
(``ZeroDivisionError``, ``AttributeError``, ...) must still reach the user as a message, not as a
traceback. So:

* :func:`loads_bounded` — JSON of at most ``max_bytes``, nested at most ``max_depth`` deep
  (checked before parsing, without recursion), integers of at most ``max_int_digits`` digits;
  every failure a ``ValueError`` with a message (``NaN``/``Infinity`` parse: published configs
  use them, and the reader refuses non-finite numbers where a figure needs one);
* :func:`read_model_config` (a ConfigMap's text) and :func:`read_model_config_file` (the CLI's
  ``--model-config``) — bounded JSON, a JSON object, then ``hf_config.load_hf_config``; any
  exception of the reader becomes a ``ValueError`` naming the source (the operator's intake
  reports it as ``InvalidModelConfig``, the CLI as an error message).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hetsched.scheduler.catalog.models import ModelConfig

#: Real ``config.json`` files are a few kB (the largest vision-language ones ~20 kB).
MAX_CONFIG_BYTES = 512 * 1024
#: Real ones nest 3–4 levels (``text_config.rope_scaling``...).
MAX_DEPTH = 32
#: Token ids and sizes have at most 10 digits; 32 leaves room and keeps ``int()`` cheap.
MAX_INT_DIGITS = 32

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKET = re.compile(r"[\[\]{}]")


def nesting_depth(text: str) -> int:
    """The deepest nesting of arrays/objects in JSON ``text`` (strings skipped; not validated)."""
    depth = deepest = 0
    for m in _BRACKET.finditer(_STRING.sub("", text)):
        if m.group() in "[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def loads_bounded(
    text: str | bytes,
    *,
    what: str = "config.json",
    max_bytes: int = MAX_CONFIG_BYTES,
    max_depth: int = MAX_DEPTH,
    max_int_digits: int = MAX_INT_DIGITS,
) -> Any:
    """Parse JSON ``text`` within the bounds (ValueError with a message naming ``what`` otherwise)."""
    size = len(text.encode() if isinstance(text, str) else text)
    if size > max_bytes:
        raise ValueError(f"{what}: {size:,} bytes, more than the {max_bytes:,} a model config may have")
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(f"{what}: not UTF-8: {exc.reason} at byte {exc.start}") from None
    depth = nesting_depth(text)
    if depth > max_depth:
        raise ValueError(f"{what}: nested {depth:,} levels deep, more than {max_depth}")

    def parse_int(digits: str) -> int:
        if len(digits.lstrip("-")) > max_int_digits:
            raise ValueError(
                f"{what}: an integer of {len(digits.lstrip('-')):,} digits, more than {max_int_digits}"
            )
        return int(digits)

    try:  # NaN and Infinity parse (published configs use them); the reader checks finiteness
        return json.loads(text, parse_int=parse_int)
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"{what}: malformed JSON at line {exc.lineno} column {exc.colno} (char {exc.pos}): {exc.msg}"
        ) from None
    except RecursionError:  # not reachable after the depth check; kept as a last line of defence
        raise ValueError(f"{what}: nested too deeply") from None


def guarded_load(load: Callable[[], ModelConfig], what: str) -> ModelConfig:
    """``load()`` (a call of ``hf_config.load_hf_config``) with every failure as a ValueError whose
    message names ``what``: the reader grows with every model family, and an input it did not
    anticipate must still end as a message, never as a traceback."""
    try:
        return load()
    except ValueError as exc:
        message = str(exc)
        raise ValueError(message if message.startswith(what) else f"{what}: {message}") from None
    except RecursionError:
        raise ValueError(f"{what}: nested too deeply") from None
    except Exception as exc:
        raise ValueError(f"{what}: cannot read the model config ({type(exc).__name__}: {exc})") from None


def read_model_config(text: str | bytes, *, what: str, name: str | None = None) -> ModelConfig:
    """A ModelConfig from the JSON ``text`` of a Hugging Face ``config.json`` (a ConfigMap's key):
    bounded (:func:`loads_bounded`), a JSON object, then the reader; ValueError on any failure."""
    from hetsched.scheduler.catalog import hf_config

    data = loads_bounded(text, what=what)
    if not isinstance(data, dict):
        raise ValueError(f"{what}: expected a JSON object at the top level, got {type(data).__name__}")
    return guarded_load(lambda: hf_config.load_hf_config(data, name), what)


def read_model_config_file(path: str | Path) -> ModelConfig:
    """The CLI's ``--model-config``: a ``config.json`` file or a folder holding one (the reader
    reads it through :func:`read_bounded_file` and :func:`loads_bounded`)."""
    from hetsched.scheduler.catalog import hf_config

    return guarded_load(lambda: hf_config.load_hf_config(path), str(path))


def read_bounded_file(path: Path, max_bytes: int = MAX_CONFIG_BYTES) -> bytes:
    """At most ``max_bytes`` of a file (ValueError when it is larger or cannot be read)."""
    try:
        with path.open("rb") as f:
            raw = f.read(max_bytes + 1)
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file") from None
    except OSError as exc:
        raise ValueError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if len(raw) > max_bytes:
        raise ValueError(f"{path}: more than the {max_bytes:,} bytes a model config may have")
    return raw
