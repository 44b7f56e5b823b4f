"""Serving engines: one home for what hetsched knows about them.

* :mod:`detect` — which engine a measurement (``backend`` column) or a container image is, for the
  calibrated per-engine terms (docs/calibration.md);
* :mod:`registry` — the engine profiles (``data/engines.yaml``): images per build (CUDA, ROCm, CPU),
  device resources per vendor, P/D connectors and their limits, routers, each with its source;
* :mod:`platform` — what a pool offers an engine, the pool and workload overrides, which image runs;
* :mod:`pairing` — whether and how an engine moves KV between two pools (placement's limits);
* :mod:`render` — an engine container's command, arguments and environment for a phase on a pool.
"""

from hetsched.scheduler.engines.detect import (
    KNOWN_ENGINES,
    SGLANG,
    TRTLLM,
    VLLM,
    engine_of_backend,
    engine_of_image,
    engine_of_images,
)

__all__ = [
    "KNOWN_ENGINES",
    "SGLANG",
    "TRTLLM",
    "VLLM",
    "engine_of_backend",
    "engine_of_image",
    "engine_of_images",
]
