"""Serving engines: which engine a measurement or a container image is (pure functions).

The calibration (docs/calibration.md) fits a few engine-software terms per engine (the fixed cost
per request, ...); every other number is shared. An engine is named by a canonical key:
``vllm``, ``sglang`` or ``trtllm``. ``None`` means unknown: the shared values apply.

* :func:`engine_of_backend` reads the ``backend`` column of a measurements CSV.
* :func:`engine_of_image` reads a container image reference (an AgentWorkload's
  ``spec.serving.image``): ``vllm/vllm-openai:v0.11.0`` → ``vllm``, ``lmsysorg/sglang:v0.5.9`` →
  ``sglang``, ``nvcr.io/nvidia/tensorrt-llm/release:1.2.0`` or
  ``nvcr.io/nvidia/tritonserver:25.01-trtllm-python-py3`` → ``trtllm``; anything else → ``None``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

VLLM = "vllm"
SGLANG = "sglang"
TRTLLM = "trtllm"
KNOWN_ENGINES: tuple[str, ...] = (SGLANG, TRTLLM, VLLM)

#: Spellings of the engines in measurement files (lower case, separators removed).
_BACKEND_ALIASES: dict[str, str] = {
    "vllm": VLLM,
    "sglang": SGLANG,
    "trtllm": TRTLLM,
    "tensorrtllm": TRTLLM,
}


def engine_of_backend(backend: str | None) -> str | None:
    """Canonical engine of a ``backend`` value (``vLLM``, ``TensorRT-LLM``, ``trt_llm`` ...), or None."""
    if not backend:
        return None
    key = re.sub(r"[\s_.\-]", "", backend.strip().lower())
    return _BACKEND_ALIASES.get(key)


def _repository(image: str) -> str:
    """The repository part of an image reference, lower case: registry and path, without the tag
    or digest (``nvcr.io/nvidia/tritonserver:25.01-trtllm-python-py3`` → ``nvcr.io/nvidia/tritonserver``)."""
    ref = image.strip().lower().split("@", 1)[0]
    slash = ref.rfind("/")
    colon = ref.rfind(":")
    return ref[:colon] if colon > slash else ref


def engine_of_image(image: str | None) -> str | None:
    """Canonical engine of a container image reference, or None when it names no known engine.

    Matched on the repository path's components (``vllm``, ``vllm-openai``, ``sglang``,
    ``tensorrt-llm``/``trtllm``), and for NVIDIA's Triton server on a ``trtllm`` tag (its
    TensorRT-LLM backend build). A bare name is the Docker Hub repository of that name.
    """
    if not image or not image.strip():
        return None
    ref = image.strip().lower()
    repo = _repository(ref)
    tag = ref[len(repo) :]
    parts = [p for p in re.split(r"[/]", repo) if p]
    words = {w for p in parts for w in re.split(r"[._]", p) if w}
    names = set(parts) | words
    if names & {"tensorrt-llm", "tensorrt_llm", "tensorrtllm", "trtllm", "trt-llm"} or any(
        p.startswith(("tensorrt-llm", "trtllm", "trt-llm")) for p in parts
    ):
        return TRTLLM
    if "tritonserver" in names and "trtllm" in tag:
        return TRTLLM
    if any(p == "sglang" or p.startswith("sglang-") for p in parts):
        return SGLANG
    if any(p == "vllm" or p.startswith("vllm-") for p in parts):
        return VLLM
    return None


def engine_of_images(images: Iterable[str | None]) -> str | None:
    """The one engine that all the given images (a workload's serving containers) run, or None
    when an image names no known engine or two images name different engines."""
    engines = {engine_of_image(i) for i in images if i is not None}
    if len(engines) != 1:
        return None
    return engines.pop()


__all__ = [
    "KNOWN_ENGINES",
    "SGLANG",
    "TRTLLM",
    "VLLM",
    "engine_of_backend",
    "engine_of_image",
    "engine_of_images",
]
