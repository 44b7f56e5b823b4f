"""Accelerators and CPUs: peaks, memory, links, power and price, each with its source."""

from __future__ import annotations

import math
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, field_validator


class DeviceKind(StrEnum):
    GPU = "gpu"
    CPU = "cpu"
    ACCELERATOR = "accelerator"


class Efficiency(BaseModel):
    """Achievable fractions of peak and fixed costs; ideal (pure roofline) by default.

    Calibrated values (issue: fidelity) are fitted against measured serving runs; ``fitted_by``
    says how (docs/calibration.md explains each number). ``--efficiency ideal`` ignores them. Every
    default is neutral: fractions 1, costs 0, so ``Efficiency()`` is the pure roofline.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    bandwidth: float = Field(
        default=1.0, gt=0, le=1, description="achievable fraction of peak DRAM bandwidth"
    )
    compute: float = Field(default=1.0, gt=0, le=1, description="achievable fraction of peak FLOP/s")
    step_overhead_seconds: float = Field(default=0.0, ge=0, description="fixed cost per forward step")
    collective_latency_seconds: float = Field(
        default=0.0, ge=0, description="latency of one tensor-parallel all-reduce"
    )
    link_efficiency: float = Field(
        default=1.0, gt=0, le=1, description="achievable fraction of link bandwidth"
    )
    layer_overhead_seconds: float = Field(
        default=0.0,
        ge=0,
        description="fixed cost per transformer layer per forward step (kernel launches, gaps, syncs)",
    )
    experts_bandwidth: float = Field(
        default=1.0,
        gt=0,
        le=10,
        description="bandwidth fraction reached by the routed-experts grouped GEMMs, relative to dense GEMMs "
        "(above 1 where the engine's dense path is the slower one, e.g. vLLM CPU's BF16 fallback)",
    )
    experts_compute: float = Field(
        default=1.0,
        gt=0,
        le=10,
        description="FLOP/s fraction reached by the routed-experts grouped GEMMs, relative to dense GEMMs "
        "(above 1 where the engine's dense path is the slower one, e.g. vLLM CPU's BF16 fallback)",
    )
    request_overhead_seconds: float = Field(
        default=0.0,
        ge=0,
        description="fixed cost added to each request's time to first token (admission, first-token return)",
    )
    overlap: float = Field(
        default=1.0,
        ge=0,
        le=1,
        description="how much of an operator's shorter side (compute or memory) hides under its longer one: "
        "1 = the roofline's max (GPUs), 0 = their sum (a CPU core that both streams and computes)",
    )
    fitted_by: str = "ideal: peak figures, no overheads"


IDEAL = Efficiency()


class HardwareSpec(BaseModel):
    """One device (a GPU, or one CPU socket) of a node pool."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, description="catalog key, e.g. h100-sxm")
    description: str = ""
    kind: DeviceKind = DeviceKind.GPU
    vendor: str = ""
    architecture: str = Field(
        default="",
        description="device generation (hopper, ampere, ada, cdna3, ...): pools of one vendor and "
        "architecture can register each other's device memory for KV transfer; empty: unknown",
    )
    memory_bytes: float = Field(gt=0, description="device DRAM/HBM capacity in bytes")
    memory_bandwidth: float = Field(gt=0, description="peak DRAM bandwidth, bytes/s")
    peak_flops: dict[str, float] = Field(
        description="dense peak FLOP/s per compute class (fp32, bf16, fp8, int8, fp4, int4)"
    )
    intra_node_bandwidth: float = Field(
        gt=0, description="per-device scale-up link bandwidth, bytes/s per direction"
    )
    intra_node_link: str = ""
    network_bandwidth: float = Field(gt=0, description="per-device scale-out network bandwidth, bytes/s")
    host_bandwidth: float = Field(
        default=32e9,
        gt=0,
        description="device ↔ host memory link (PCIe), bytes/s per direction: KV staged through host "
        "memory crosses it (CPUs: unused, their memory is the host's)",
    )
    power_watts: float = Field(gt=0)
    price_per_hour: float = Field(ge=0, description="USD per device-hour (overridable per pool)")
    gfd_products: tuple[str, ...] = Field(default=(), description="nvidia.com/gpu.product label values")
    source: str = Field(min_length=1)
    price_source: str = ""
    efficiency: Efficiency = IDEAL

    @field_validator("peak_flops")
    @classmethod
    def _positive_peaks(cls, value: dict[str, float]) -> dict[str, float]:
        if not value:
            raise ValueError("at least one compute class is needed")
        bad = {k: v for k, v in value.items() if not (math.isfinite(v) and v > 0)}
        if bad:
            raise ValueError(f"peaks must be positive and finite, got {bad}")
        return value

    def peak_for(self, compute_class: str) -> float:
        """Peak FLOP/s for a compute class; a format the device lacks runs at the next wider rate.

        E.g. fp8 weights on an A100 are up-converted and multiplied at bf16 rate; bf16 on a T4 runs
        at its fp16 rate (catalog stores that under bf16).
        """
        order = ["fp4", "int4", "fp8", "int8", "bf16", "fp32"]
        start = order.index(compute_class) if compute_class in order else order.index("bf16")
        for cls in order[start:]:
            if cls in self.peak_flops:
                # int formats are only a fallback for int formats; fp4/fp8 fall back to wider fp.
                if cls.startswith("int") and not compute_class.startswith("int"):
                    continue
                return self.peak_flops[cls]
        return self.peak_flops["bf16"] if "bf16" in self.peak_flops else max(self.peak_flops.values())

    def ridge_point(self, compute_class: str = "bf16") -> float:
        """FLOPs per byte at which the roofline turns from bandwidth- to compute-bound."""
        return self.peak_for(compute_class) / self.memory_bandwidth
