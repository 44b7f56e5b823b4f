"""Numeric formats for weights, KV cache and activations, with their storage cost.

Block-scaled formats store one scale per block of elements; the scale's bytes are spread over
the block, so the effective bytes per element is ``bits/8 + scale_bytes/block``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Precision(StrEnum):
    FP32 = "fp32"
    BF16 = "bf16"
    FP16 = "fp16"
    FP8 = "fp8"
    INT8 = "int8"
    INT4 = "int4"
    NVFP4 = "nvfp4"
    MXFP4 = "mxfp4"


@dataclass(frozen=True, slots=True)
class PrecisionInfo:
    bits: int
    block: int  # elements sharing one scale (0: no block scale)
    scale_bytes: float  # bytes of each block's scale
    compute_class: str  # which peak FLOP/s of the hardware applies: fp32, bf16, fp8, int8, fp4
    source: str

    @property
    def bytes_per_element(self) -> float:
        overhead = self.scale_bytes / self.block if self.block else 0.0
        return self.bits / 8 + overhead


PRECISIONS: dict[Precision, PrecisionInfo] = {
    Precision.FP32: PrecisionInfo(32, 0, 0.0, "fp32", "IEEE 754 binary32"),
    Precision.BF16: PrecisionInfo(16, 0, 0.0, "bf16", "bfloat16"),
    Precision.FP16: PrecisionInfo(16, 0, 0.0, "bf16", "IEEE 754 binary16 (same tensor-core rate as bf16)"),
    # Per-tensor or per-channel scales: negligible storage.
    Precision.FP8: PrecisionInfo(8, 0, 0.0, "fp8", "OCP FP8 E4M3/E5M2"),
    Precision.INT8: PrecisionInfo(8, 0, 0.0, "int8", "per-channel scaled int8"),
    # Group-wise int4 (GPTQ/AWQ style): one fp16 scale per 128 weights -> 4.125 bits.
    Precision.INT4: PrecisionInfo(4, 128, 2.0, "int4", "AWQ/GPTQ group size 128, fp16 scales"),
    # NVFP4: E2M1 values, one FP8 (E4M3) scale per 16 elements -> 4.5 bits (NVIDIA Blackwell docs).
    Precision.NVFP4: PrecisionInfo(4, 16, 1.0, "fp4", "NVIDIA NVFP4: E2M1 + E4M3 scale per 16 elements"),
    # MXFP4: E2M1 values, one E8M0 scale per 32 elements -> 4.25 bits (OCP Microscaling spec v1.0).
    Precision.MXFP4: PrecisionInfo(4, 32, 1.0, "fp4", "OCP MX spec v1.0: E2M1 + E8M0 scale per 32 elements"),
}


def bytes_per_element(precision: Precision | str) -> float:
    return PRECISIONS[Precision(precision)].bytes_per_element


def parse_precision(value: str, field: str = "precision") -> Precision:
    """Parse a user-given precision name, with an error that names the field and the choices."""
    aliases = {
        "float32": "fp32",
        "bfloat16": "bf16",
        "float16": "fp16",
        "half": "fp16",
        "e4m3": "fp8",
        "fp4": "nvfp4",
    }
    key = aliases.get(value.lower(), value.lower())
    try:
        return Precision(key)
    except ValueError:
        choices = ", ".join(p.value for p in Precision)
        raise ValueError(f"{field}: unknown precision {value!r} (choose one of {choices})") from None
