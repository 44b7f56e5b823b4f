"""Built-in hardware: datasheet peaks, memory, links, power and an indicative price per device.

Conventions:

* ``peak_flops`` are *dense* tensor-core (matrix-engine) peaks per compute class; NVIDIA's headline
  figures with 2:4 structured sparsity are twice these and are not used. ``fp32`` is the IEEE FP32
  (non-tensor) rate. A device without BF16 (T4, V100) stores its FP16 tensor rate under ``bf16``.
* Memory in bytes with GB = 1e9 as the datasheets do (an "80 GB" H100 has 80e9 usable bytes in our
  model; its HBM stacks physically hold 80 GiB = 85.9e9 bytes, of which ~79.6 GiB are usable).
* ``intra_node_bandwidth`` is per device and *per direction*: NVLink 4 on H100 is 900 GB/s
  bidirectional = 450 GB/s each way; PCIe Gen4/Gen5 ×16 = 32/64 GB/s each way.
* ``network_bandwidth`` is the device's share of its node's scale-out NICs (DGX/HGX: one 400 Gb/s
  NIC per GPU = 50 GB/s).
* ``price_per_hour`` (USD per device-hour) is an *indicative* on-demand list price, cited in
  ``price_source``; real contracts differ widely, so pools override it (``pricePerDeviceHour``).
* ``efficiency`` is left ideal (1.0); calibration against measurements sets it elsewhere.
* CPUs: one device = one socket. Peaks are derived from the matrix/vector units (arithmetic in
  comments) at the *base* clock, since AMX/AVX-512 code runs near base under full load; memory is
  a typical configuration of 12 × 64 GiB DDR5 RDIMMs = 768 GiB per socket.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from ..calibration.calibrated import calibrate
from .hardware import DeviceKind, HardwareSpec


class UnknownHardwareError(KeyError, ValueError):
    """No catalog hardware of that name; the message lists close names."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


T = 1e12
GB = 1e9
GIB = 2**30
_PCIE3 = 16 * GB  # PCIe Gen3 ×16: 16 GB/s per direction ("32 GB/s" bidirectional on datasheets)
_PCIE4 = 32 * GB  # PCIe Gen4 ×16
_PCIE5 = 64 * GB  # PCIe Gen5 ×16
_NIC_400G = 400e9 / 8  # one 400 Gb/s NIC per GPU (DGX H100/H200/B200, ConnectX-7)
_NIC_200G = 200e9 / 8  # one 200 Gb/s NIC per GPU (DGX A100, ConnectX-6)
_NIC_100G = 100e9 / 8

_DATA_MD = "GPU cloud 2024 price as used by Vidur (hetsched DATA.md); indicative, override per pool"
_AWS = "AWS EC2 on-demand, us-east-1 (instance price per GPU); indicative, override per pool"

_H100_SXM_DS = "https://resources.nvidia.com/en-us-tensor-core/nvidia-tensor-core-gpu-datasheet (H100 SXM)"
_A100_DS = (
    "https://www.nvidia.com/content/dam/en-zz/Solutions/Data-Center/a100/pdf/"
    "nvidia-a100-datasheet-us-nvidia-1758950-r4-web.pdf"
)
_V100_DS = (
    "https://images.nvidia.com/content/technologies/volta/pdf/"
    "volta-v100-datasheet-update-us-1165301-r5.pdf (V100 SXM2)"
)

_ENTRIES: list[HardwareSpec] = [
    # ---- NVIDIA Hopper ---------------------------------------------------------------------------
    HardwareSpec(
        name="h100-sxm",
        description="NVIDIA H100 SXM5 80GB HBM3",
        vendor="NVIDIA",
        memory_bytes=80 * GB,
        memory_bandwidth=3.35 * T,
        peak_flops={"fp32": 67 * T, "bf16": 989.4 * T, "fp8": 1978.9 * T, "int8": 1978.9 * T},
        intra_node_bandwidth=450 * GB,
        intra_node_link="NVLink 4 (900 GB/s bidirectional)",
        network_bandwidth=_NIC_400G,
        power_watts=700,
        price_per_hour=4.25,
        price_source=_DATA_MD + "; a hyperscaler listed $10.8/h in 2025",
        gfd_products=("NVIDIA-H100-80GB-HBM3",),
        source=_H100_SXM_DS,
    ),
    HardwareSpec(
        name="h100-pcie",
        description="NVIDIA H100 PCIe 80GB HBM2e",
        vendor="NVIDIA",
        memory_bytes=80 * GB,
        memory_bandwidth=2.0 * T,
        peak_flops={"fp32": 51 * T, "bf16": 756 * T, "fp8": 1513 * T, "int8": 1513 * T},
        intra_node_bandwidth=_PCIE5,
        intra_node_link="PCIe Gen5 x16 (optional NVLink bridge between pairs: 600 GB/s)",
        network_bandwidth=_NIC_200G,
        power_watts=350,
        price_per_hour=3.19,
        price_source="assumption: 0.75 × h100-sxm (PCIe cards list 20–30% below SXM); override per pool",
        gfd_products=("NVIDIA-H100-PCIe",),
        source="https://resources.nvidia.com/en-us-tensor-core/nvidia-tensor-core-gpu-datasheet (H100 PCIe)",
    ),
    HardwareSpec(
        name="h200",
        description="NVIDIA H200 SXM 141GB HBM3e",
        vendor="NVIDIA",
        memory_bytes=141 * GB,
        memory_bandwidth=4.8 * T,
        peak_flops={"fp32": 67 * T, "bf16": 989.4 * T, "fp8": 1978.9 * T, "int8": 1978.9 * T},
        intra_node_bandwidth=450 * GB,
        intra_node_link="NVLink 4 (900 GB/s bidirectional)",
        network_bandwidth=_NIC_400G,
        power_watts=700,
        price_per_hour=5.75,
        price_source="midpoint of the hyperscaler on-demand range $4.50–7.00 (mercatus-ai.com cloud GPU "
        "pricing, 2026; the same table's H100 midpoint is $4.25); indicative, override per pool",
        gfd_products=("NVIDIA-H200", "NVIDIA-H200-141GB-HBM3e"),
        source="https://www.nvidia.com/en-us/data-center/h200/ (H200 SXM)",
    ),
    # ---- NVIDIA Blackwell ------------------------------------------------------------------------
    HardwareSpec(
        name="b200",
        description="NVIDIA B200 (HGX/DGX B200: 180 GB of the 192 GB HBM3e usable)",
        vendor="NVIDIA",
        memory_bytes=180 * GB,
        memory_bandwidth=8.0 * T,
        peak_flops={
            "fp32": 75 * T,
            "bf16": 2250 * T,
            "fp8": 4500 * T,
            "int8": 4500 * T,
            "fp4": 9000 * T,
        },
        intra_node_bandwidth=900 * GB,
        intra_node_link="NVLink 5 (1.8 TB/s bidirectional)",
        network_bandwidth=_NIC_400G,
        power_watts=1000,
        price_per_hour=8.60,
        price_source="CoreWeave HGX B200 8-GPU node $68.80/h ÷ 8 (as reported by deploybase.ai, 2026); "
        "indicative, override per pool",
        gfd_products=("NVIDIA-B200",),
        source="https://www.nvidia.com/en-us/data-center/hgx/ (HGX B200, per GPU = 1/8; "
        "some sources give 7.7 TB/s)",
    ),
    # ---- NVIDIA Ampere ---------------------------------------------------------------------------
    HardwareSpec(
        name="a100-80gb",
        description="NVIDIA A100 SXM4 80GB HBM2e",
        vendor="NVIDIA",
        memory_bytes=80 * GB,
        memory_bandwidth=2.039 * T,
        peak_flops={"fp32": 19.5 * T, "bf16": 312 * T, "int8": 624 * T, "int4": 1248 * T},
        intra_node_bandwidth=300 * GB,
        intra_node_link="NVLink 3 (600 GB/s bidirectional)",
        network_bandwidth=_NIC_200G,
        power_watts=400,
        price_per_hour=2.21,
        price_source=_DATA_MD,
        gfd_products=("NVIDIA-A100-SXM4-80GB",),
        source=_A100_DS,
    ),
    HardwareSpec(
        name="a100-40gb",
        description="NVIDIA A100 SXM4 40GB HBM2",
        vendor="NVIDIA",
        memory_bytes=40 * GB,
        memory_bandwidth=1.555 * T,
        peak_flops={"fp32": 19.5 * T, "bf16": 312 * T, "int8": 624 * T, "int4": 1248 * T},
        intra_node_bandwidth=300 * GB,
        intra_node_link="NVLink 3 (600 GB/s bidirectional)",
        network_bandwidth=_NIC_200G,
        power_watts=400,
        price_per_hour=1.99,
        price_source="assumption: 0.9 × a100-80gb; override per pool",
        gfd_products=("NVIDIA-A100-SXM4-40GB",),
        source=_A100_DS,
    ),
    HardwareSpec(
        name="a100-80gb-pcie",
        description="NVIDIA A100 80GB PCIe",
        vendor="NVIDIA",
        memory_bytes=80 * GB,
        memory_bandwidth=1.935 * T,
        peak_flops={"fp32": 19.5 * T, "bf16": 312 * T, "int8": 624 * T, "int4": 1248 * T},
        intra_node_bandwidth=_PCIE4,
        intra_node_link="PCIe Gen4 x16 (optional NVLink bridge between pairs: 600 GB/s)",
        network_bandwidth=_NIC_100G,
        power_watts=300,
        price_per_hour=1.99,
        price_source="assumption: 0.9 × a100-80gb (SXM); override per pool",
        gfd_products=("NVIDIA-A100-80GB-PCIe",),
        source=_A100_DS,
    ),
    HardwareSpec(
        name="a100-40gb-pcie",
        description="NVIDIA A100 40GB PCIe",
        vendor="NVIDIA",
        memory_bytes=40 * GB,
        memory_bandwidth=1.555 * T,
        peak_flops={"fp32": 19.5 * T, "bf16": 312 * T, "int8": 624 * T, "int4": 1248 * T},
        intra_node_bandwidth=_PCIE4,
        intra_node_link="PCIe Gen4 x16",
        network_bandwidth=_NIC_100G,
        power_watts=250,
        price_per_hour=1.79,
        price_source="assumption: 0.9 × a100-40gb (SXM); override per pool",
        gfd_products=("NVIDIA-A100-PCIE-40GB",),
        source=_A100_DS,
    ),
    # ---- NVIDIA Ada / Ampere inference cards -------------------------------------------------------
    HardwareSpec(
        name="l40s",
        description="NVIDIA L40S 48GB GDDR6",
        vendor="NVIDIA",
        memory_bytes=48 * GB,
        memory_bandwidth=864 * GB,
        peak_flops={"fp32": 91.6 * T, "bf16": 362.05 * T, "fp8": 733 * T, "int8": 733 * T, "int4": 733 * T},
        intra_node_bandwidth=_PCIE4,
        intra_node_link="PCIe Gen4 x16 (no NVLink)",
        network_bandwidth=_NIC_400G,
        power_watts=350,
        price_per_hour=1.861,
        price_source=_AWS + ": g6e.xlarge (1 × L40S) $1.861/h; network: g6e.48xlarge 400 Gb/s per GPU",
        gfd_products=("NVIDIA-L40S",),
        source="https://www.nvidia.com/en-us/data-center/l40s/ (datasheet)",
    ),
    HardwareSpec(
        name="l4",
        description="NVIDIA L4 24GB GDDR6",
        vendor="NVIDIA",
        memory_bytes=24 * GB,
        memory_bandwidth=300 * GB,
        peak_flops={"fp32": 30.3 * T, "bf16": 121 * T, "fp8": 242.5 * T, "int8": 242.5 * T},
        intra_node_bandwidth=_PCIE4,
        intra_node_link="PCIe Gen4 x16",
        network_bandwidth=_NIC_100G / 8,
        power_watts=72,
        price_per_hour=0.8048,
        price_source=_AWS + ": g6.xlarge (1 × L4) $0.8048/h; network: g6.48xlarge 100 Gb/s ÷ 8 GPUs",
        gfd_products=("NVIDIA-L4",),
        source="https://www.nvidia.com/en-us/data-center/l4/ (datasheet)",
    ),
    HardwareSpec(
        name="a10g",
        description="NVIDIA A10G 24GB GDDR6 (AWS G5 variant of the A10)",
        vendor="NVIDIA",
        memory_bytes=24 * GB,
        memory_bandwidth=600 * GB,
        # NVIDIA publishes no A10G datasheet; sources disagree. Baseten's A10 vs A10G comparison
        # gives 70 TFLOP/s BF16 tensor and 35 TFLOP/s FP32; int8 = 2 × bf16 is our assumption.
        peak_flops={"fp32": 35 * T, "bf16": 70 * T, "int8": 140 * T},
        intra_node_bandwidth=_PCIE4,
        intra_node_link="PCIe Gen4 x16",
        network_bandwidth=_NIC_100G / 8,
        power_watts=150,
        price_per_hour=1.212,
        price_source=_AWS + ": g5.2xlarge (1 × A10G) $1.212/h (DATA.md: A10 instance $1.21/h); "
        "network: g5.48xlarge 100 Gb/s ÷ 8 GPUs",
        gfd_products=("NVIDIA-A10G",),
        source="https://www.baseten.co/blog/nvidia-a10-vs-a10g-for-ml-model-inference/ (A10G peaks; "
        "uncertain); AWS G5 documentation (24 GB, 600 GB/s)",
    ),
    HardwareSpec(
        name="a10",
        description="NVIDIA A10 24GB GDDR6",
        vendor="NVIDIA",
        memory_bytes=24 * GB,
        memory_bandwidth=600 * GB,
        peak_flops={"fp32": 31.2 * T, "bf16": 125 * T, "int8": 250 * T, "int4": 500 * T},
        intra_node_bandwidth=_PCIE4,
        intra_node_link="PCIe Gen4 x16",
        network_bandwidth=_NIC_100G / 8,
        power_watts=150,
        price_per_hour=1.212,
        price_source="assumption: same as a10g (DATA.md: A10 instance $1.21/h); override per pool",
        gfd_products=("NVIDIA-A10",),
        source="https://www.nvidia.com/en-us/data-center/products/a10-gpu/ (datasheet)",
    ),
    # ---- NVIDIA Turing / Volta ---------------------------------------------------------------------
    HardwareSpec(
        name="t4",
        description="NVIDIA T4 16GB GDDR6 (no BF16: FP16 tensor rate stored under bf16)",
        vendor="NVIDIA",
        memory_bytes=16 * GB,
        memory_bandwidth=320 * GB,
        peak_flops={"fp32": 8.1 * T, "bf16": 65 * T, "int8": 130 * T, "int4": 260 * T},
        intra_node_bandwidth=_PCIE3,
        intra_node_link="PCIe Gen3 x16",
        network_bandwidth=_NIC_100G / 8,
        power_watts=70,
        price_per_hour=0.526,
        price_source=_AWS + ": g4dn.xlarge (1 × T4) $0.526/h; network: g4dn.metal 100 Gb/s ÷ 8 GPUs",
        gfd_products=("Tesla-T4",),
        source="https://www.nvidia.com/en-us/data-center/tesla-t4/ (datasheet)",
    ),
    HardwareSpec(
        name="v100",
        description="NVIDIA V100 SXM2 16GB HBM2 (no BF16: FP16 tensor rate stored under bf16)",
        vendor="NVIDIA",
        memory_bytes=16 * GB,
        memory_bandwidth=900 * GB,
        peak_flops={"fp32": 15.7 * T, "bf16": 125 * T},
        intra_node_bandwidth=150 * GB,
        intra_node_link="NVLink 2 (300 GB/s bidirectional)",
        network_bandwidth=25e9 / 8 / 8,
        power_watts=300,
        price_per_hour=3.06,
        price_source=_AWS + ": p3.2xlarge (1 × V100 16GB) $3.06/h; network: p3.16xlarge 25 Gb/s ÷ 8 GPUs",
        gfd_products=("Tesla-V100-SXM2-16GB",),
        source=_V100_DS,
    ),
    HardwareSpec(
        name="v100-32gb",
        description="NVIDIA V100 SXM2 32GB HBM2 (no BF16: FP16 tensor rate stored under bf16)",
        vendor="NVIDIA",
        memory_bytes=32 * GB,
        memory_bandwidth=900 * GB,
        peak_flops={"fp32": 15.7 * T, "bf16": 125 * T},
        intra_node_bandwidth=150 * GB,
        intra_node_link="NVLink 2 (300 GB/s bidirectional)",
        network_bandwidth=_NIC_100G / 8,
        power_watts=300,
        price_per_hour=3.90,
        price_source=_AWS + ": p3dn.24xlarge (8 × V100 32GB) $31.212/h ÷ 8; network 100 Gb/s ÷ 8 GPUs",
        gfd_products=("Tesla-V100-SXM2-32GB",),
        source=_V100_DS,
    ),
    # ---- AMD -------------------------------------------------------------------------------------
    HardwareSpec(
        name="mi300x",
        description="AMD Instinct MI300X 192GB HBM3",
        vendor="AMD",
        memory_bytes=192 * GB,
        memory_bandwidth=5.3 * T,
        peak_flops={"fp32": 163.4 * T, "bf16": 1307.4 * T, "fp8": 2614.9 * T, "int8": 2614.9 * T},
        # 7 Infinity Fabric links × 128 GB/s bidirectional = 896 GB/s → 448 GB/s each way.
        intra_node_bandwidth=448 * GB,
        intra_node_link="AMD Infinity Fabric, 7 links (896 GB/s bidirectional)",
        network_bandwidth=_NIC_400G,
        power_watts=750,
        price_per_hour=1.71,
        price_source="GPU cloud price seen for MI300X (hetsched DATA.md); indicative, override per pool",
        gfd_products=(),  # AMD's device plugin labels nodes amd.com/gpu.*; no GFD product label
        source="https://www.amd.com/en/products/accelerators/instinct/mi300/mi300x.html (datasheet)",
    ),
    # ---- CPUs (one device = one socket) ------------------------------------------------------------
    HardwareSpec(
        name="xeon-6980p",
        description="Intel Xeon 6980P (Granite Rapids, 128 cores, AMX), one socket, 768 GiB DDR5-6400",
        kind=DeviceKind.CPU,
        vendor="Intel",
        # 12 × 64 GiB RDIMMs (a typical configuration; the platform takes up to 3 TB per socket).
        memory_bytes=768 * GIB,
        # 12 channels × 6400 MT/s × 8 bytes = 614.4 GB/s.
        memory_bandwidth=12 * 6400e6 * 8,
        peak_flops={
            # AMX TMUL: 1024 BF16 FLOP/cycle/core (512 FMAs) × 128 cores × 2.0 GHz base = 262.1 TFLOP/s.
            "bf16": 1024 * 128 * 2.0e9,
            # AMX INT8: 2048 ops/cycle/core × 128 × 2.0 GHz = 524.3 TOP/s.
            "int8": 2048 * 128 * 2.0e9,
            # AVX-512: 2 FMA units × 16 FP32 lanes × 2 = 64 FLOP/cycle/core × 128 × 2.0 GHz = 16.4 TFLOP/s.
            "fp32": 64 * 128 * 2.0e9,
        },
        # 6 UPI 2.0 links × 24 GT/s × 2 bytes = 288 GB/s per direction to the other socket.
        intra_node_bandwidth=6 * 24e9 * 2,
        intra_node_link="UPI 2.0, 6 links at 24 GT/s",
        network_bandwidth=_NIC_100G,
        power_watts=500,
        # 256 vCPUs (128 cores × 2 threads) × $0.0504 per vCPU-hour (AWS m7i, Intel Sapphire Rapids,
        # on-demand us-east-1: m7i.48xlarge $9.6768/h for 192 vCPUs) = $12.90 per socket-hour.
        price_per_hour=12.90,
        price_source="derived: AWS m7i on-demand per-vCPU price × 256 vCPUs (a cloud CPU price; owned "
        "hardware costs far less: set the pool's price); override per pool",
        source="Intel Xeon 6900P launch specs (techpowerup.com/326957; hardwareluxx.de 64561): "
        "6980P 128 cores, 2.0 GHz base / 3.2 GHz all-core, 12 × DDR5-6400, 6 UPI 2.0 at 24 GT/s, "
        "500 W; Intel AMX: 1024 BF16 / 2048 INT8 ops/cycle/core",
    ),
    HardwareSpec(
        name="epyc-9654",
        description="AMD EPYC 9654 (Genoa, 96 cores, AVX-512 BF16), one socket, 768 GiB DDR5-4800",
        kind=DeviceKind.CPU,
        vendor="AMD",
        memory_bytes=768 * GIB,
        # 12 channels × 4800 MT/s × 8 bytes = 460.8 GB/s.
        memory_bandwidth=12 * 4800e6 * 8,
        peak_flops={
            # Zen 4 runs a 512-bit VDPBF16PS as two 256-bit halves on its 2 FMA pipes: one per cycle,
            # 32 BF16 pairs = 64 FLOP/cycle/core × 96 cores × 2.4 GHz base = 14.7 TFLOP/s.
            "bf16": 64 * 96 * 2.4e9,
            # AVX-512 VNNI VPDPBUSD: 64 INT8 MACs = 128 ops/cycle/core × 96 × 2.4 GHz = 29.5 TOP/s.
            "int8": 128 * 96 * 2.4e9,
            # 2 × 256-bit FMA = 32 FP32 FLOP/cycle/core × 96 × 2.4 GHz = 7.4 TFLOP/s.
            "fp32": 32 * 96 * 2.4e9,
        },
        # 4 xGMI links × 16 lanes × 32 Gb/s ÷ 8 = 256 GB/s per direction to the other socket.
        intra_node_bandwidth=4 * 16 * 32e9 / 8,
        intra_node_link="Infinity Fabric xGMI, 4 links x16 at 32 Gb/s",
        network_bandwidth=_NIC_100G,
        power_watts=360,
        # 96 vCPUs (AWS m7a: 1 vCPU = 1 physical Genoa core) × $0.05796 per vCPU-hour
        # (m7a.48xlarge $11.12832/h for 192 vCPUs = 2 × 96-core EPYC 9R14) = $5.56 per socket-hour.
        price_per_hour=5.56,
        price_source="derived: AWS m7a on-demand per-vCPU price × 96 cores (a cloud CPU price; owned "
        "hardware costs far less: set the pool's price); override per pool",
        source="https://www.amd.com/en/products/processors/server/epyc/4th-generation-9004-and-8004-series/"
        "amd-epyc-9654.html (96 cores, 2.4 GHz base, 12 × DDR5-4800, 360 W)",
    ),
]

# Each entry gets the efficiency fitted against measured serving (scheduler/calibration/calibrated.py;
# docs/calibration.md); ``--efficiency ideal`` ignores it.
HARDWARE: dict[str, HardwareSpec] = {hw.name: calibrate(hw) for hw in _ENTRIES}

#: Other names for catalog entries (lower case, '-' for '_'): short names and the
#: ``system`` column of the measured-benchmark CSV (``h200_sxm``, ``b200_sxm``).
ALIASES: dict[str, str] = {
    "h100": "h100-sxm",
    "h100-sxm5": "h100-sxm",
    "h100-80gb": "h100-sxm",
    "h100-pcie-80gb": "h100-pcie",
    "h200-sxm": "h200",
    "h200-141gb": "h200",
    "b200-sxm": "b200",
    "a100": "a100-80gb",
    "a100-sxm": "a100-80gb",
    "a100-sxm4": "a100-80gb",
    "a100-sxm-80gb": "a100-80gb",
    "a100-sxm4-80gb": "a100-80gb",
    "a100-80gb-sxm": "a100-80gb",
    "a100-sxm-40gb": "a100-40gb",
    "a100-sxm4-40gb": "a100-40gb",
    "a100-40gb-sxm": "a100-40gb",
    "a100-pcie": "a100-80gb-pcie",
    "l40s-48gb": "l40s",
    "l4-24gb": "l4",
    "v100-16gb": "v100",
    "v100-sxm2": "v100",
    "v100-sxm2-16gb": "v100",
    "v100-sxm2-32gb": "v100-32gb",
    "mi300": "mi300x",
    "xeon6-6980p": "xeon-6980p",
    "granite-rapids": "xeon-6980p",
    "genoa": "epyc-9654",
}


def _key(name: str) -> str:
    return name.strip().lower().replace("_", "-").replace(" ", "-")


def resolve_hardware_name(name: str) -> str | None:
    key = _key(name)
    if key in HARDWARE:
        return key
    return ALIASES.get(key)


def get_hardware(name: str) -> HardwareSpec:
    """A catalog device by key or alias (case-insensitive; ``h200_sxm`` = ``h200``)."""
    key = resolve_hardware_name(name)
    if key is None:
        names = sorted(set(HARDWARE) | set(ALIASES))
        close = difflib.get_close_matches(_key(name), names, n=4, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise UnknownHardwareError(f"unknown hardware {name!r}{hint} (known: {', '.join(sorted(HARDWARE))})")
    return HARDWARE[key]


# ---- GPU Feature Discovery ---------------------------------------------------------------------------
_NOISE = {"nvidia", "tesla", "sxm", "sxm2", "sxm4", "sxm5", "hbm2", "hbm2e", "hbm3", "hbm3e", "gddr6"}
_DISCRIMINATING = {"pcie", "nvl", "mig", "max-q", "mobile"}
_MEM_TOKEN = re.compile(r"^(\d+)gb$")


def _tokens(label: str) -> list[str]:
    text = label.strip().lower().replace("_", "-").replace(" ", "-").replace("pci-e", "pcie")
    text = text.removesuffix("-shared")  # GFD's suffix when time-slicing/MPS shares the GPU
    return [t for t in text.split("-") if t and t not in _NOISE]


def _fuzzy_ok(query: list[str], candidate: list[str], spec: HardwareSpec) -> bool:
    if not candidate or query[0] != candidate[0] or not set(candidate) <= set(query):
        return False
    for extra in set(query) - set(candidate):
        if extra in _DISCRIMINATING or extra.startswith(("mig", "1g", "2g", "3g", "4g", "7g")):
            return False
        mem = _MEM_TOKEN.match(extra)
        if mem and abs(int(mem.group(1)) * GB - spec.memory_bytes) > 0.1 * spec.memory_bytes:
            return False
        if not mem:
            return False  # an unknown qualifier: better no match than a wrong device
    return True


def hardware_for_gfd_product(label: str) -> HardwareSpec | None:
    """The catalog device for a ``nvidia.com/gpu.product`` node label, or None.

    Exact match first (case-insensitive, a ``-SHARED`` suffix ignored); then a normalised match
    that ignores vendor prefixes and form-factor/memory-type tokens (``NVIDIA-H100-SXM5-80GB`` →
    h100-sxm) but never maps a label with a different qualifier (PCIe, NVL, MIG slices, another
    memory size) to a device that lacks it.
    """
    wanted = label.strip().lower().removesuffix("-shared")
    for hw in _ENTRIES:
        if any(p.lower() == wanted for p in hw.gfd_products):
            return hw
    query = _tokens(label)
    if not query:
        return None
    matches: dict[str, tuple[int, HardwareSpec]] = {}
    for hw in _ENTRIES:
        for product in hw.gfd_products:
            candidate = _tokens(product)
            if _fuzzy_ok(query, candidate, hw):
                best = matches.get(hw.name, (0, hw))[0]
                matches[hw.name] = (max(best, len(candidate)), hw)
    if not matches:
        return None
    ranked = sorted(matches.values(), key=lambda m: -m[0])
    if len(ranked) > 1 and ranked[0][0] == ranked[1][0]:
        return None  # ambiguous
    return ranked[0][1]


# ---- custom hardware from YAML -------------------------------------------------------------------------
_BYTES_UNITS = {
    "b": 1.0,
    "kb": 1e3,
    "mb": 1e6,
    "gb": 1e9,
    "tb": 1e12,
    "kib": 2.0**10,
    "mib": 2.0**20,
    "gib": 2.0**30,
    "tib": 2.0**40,
}
_RATE_UNITS = {"k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12, "p": 1e15}
_QUANTITY = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([A-Za-z/]*)\s*$")

#: YAML key (camelCase or snake_case) → HardwareSpec field.
_YAML_FIELDS = {
    "name": "name",
    "description": "description",
    "kind": "kind",
    "vendor": "vendor",
    "memory": "memory_bytes",
    "memorybytes": "memory_bytes",
    "bandwidth": "memory_bandwidth",
    "memorybandwidth": "memory_bandwidth",
    "peaktflops": "peak_tflops",
    "peakflops": "peak_flops",
    "intranodebandwidth": "intra_node_bandwidth",
    "intranodelink": "intra_node_link",
    "networkbandwidth": "network_bandwidth",
    "power": "power_watts",
    "powerwatts": "power_watts",
    "priceperhour": "price_per_hour",
    "pricesource": "price_source",
    "gfdproducts": "gfd_products",
    "source": "source",
    "basedon": "based_on",
}

_YAML_NAMES = (
    "name",
    "description",
    "kind",
    "vendor",
    "memory",
    "bandwidth",
    "peakTflops",
    "peakFlops",
    "intraNodeBandwidth",
    "intraNodeLink",
    "networkBandwidth",
    "power",
    "pricePerHour",
    "priceSource",
    "gfdProducts",
    "source",
    "basedOn",
)


def _number(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{where}: expected a number, got {value!r}")
    return float(value)


def parse_bytes(value: object, where: str = "memory") -> float:
    """``80GB`` (1e9), ``80GiB`` (2^30), ``512MiB``, or a plain number of bytes."""
    if not isinstance(value, str):
        return _number(value, where)
    m = _QUANTITY.match(value)
    unit = m.group(2).lower() if m else ""
    if not m or (unit and unit not in _BYTES_UNITS):
        raise ValueError(f"{where}: cannot read {value!r} as a size (e.g. 80GB, 80GiB, 8e10)")
    return float(m.group(1)) * (_BYTES_UNITS[unit] if unit else 1.0)


def parse_rate(value: object, where: str = "bandwidth") -> float:
    """Bytes per second: ``3.35TB/s``, ``900GB/s``, ``400Gb/s`` or ``400Gbps`` (bits), or a number."""
    if not isinstance(value, str):
        return _number(value, where)
    m = _QUANTITY.match(value)
    if m:
        number, unit = float(m.group(1)), m.group(2)
        if not unit:
            return number
        rate = re.fullmatch(r"([kKMGTP]?)(B|b)(/s|ps)", unit)
        if rate:
            scale = _RATE_UNITS.get(rate.group(1).lower(), 1.0)
            return number * scale / (8 if rate.group(2) == "b" else 1)
    raise ValueError(f"{where}: cannot read {value!r} as a bandwidth (e.g. 3.35TB/s, 900GB/s, 400Gb/s)")


def parse_power(value: object, where: str = "power") -> float:
    if isinstance(value, str):
        m = _QUANTITY.match(value)
        if m and m.group(2).lower() in ("", "w", "kw"):
            return float(m.group(1)) * (1e3 if m.group(2).lower() == "kw" else 1.0)
        raise ValueError(f"{where}: cannot read {value!r} as a power (e.g. 700W)")
    return _number(value, where)


def _flops_table(value: object, where: str, scale: float) -> dict[str, float]:
    if not isinstance(value, Mapping):
        raise ValueError(f"{where}: expected a mapping of compute class to peak, e.g. {{bf16: 989}}")
    known = {"fp32", "bf16", "fp16", "fp8", "int8", "fp4", "int4"}
    out: dict[str, float] = {}
    for cls, peak in value.items():
        key = str(cls).lower()
        if key not in known:
            raise ValueError(f"{where}.{cls}: unknown compute class (use one of {', '.join(sorted(known))})")
        if isinstance(peak, str):
            m = _QUANTITY.match(peak)
            unit = m.group(2).lower() if m else None
            units = {"": scale, "tflops": 1e12, "pflops": 1e15, "gflops": 1e9, "tops": 1e12, "pops": 1e15}
            if m is None or unit not in units:
                raise ValueError(f"{where}.{cls}: cannot read {peak!r} (e.g. 989 or '989TFLOPS')")
            number = float(m.group(1)) * units[unit or ""]
        else:
            number = _number(peak, f"{where}.{cls}") * scale
        out["bf16" if key == "fp16" else key] = number
    return out


def _spec_from_yaml(entry: object, where: str) -> HardwareSpec:
    if not isinstance(entry, Mapping):
        raise ValueError(f"{where}: expected a mapping of hardware fields, got {type(entry).__name__}")
    fields: dict[str, Any] = {}
    for raw_key, value in entry.items():
        norm = str(raw_key).replace("_", "").replace("-", "").lower()
        if norm not in _YAML_FIELDS:
            raise ValueError(f"{where}.{raw_key}: unknown field (known: {', '.join(_YAML_NAMES)})")
        fields[_YAML_FIELDS[norm]] = (raw_key, value)
    base: dict[str, Any] = {}
    if "based_on" in fields:
        raw_key, value = fields.pop("based_on")
        try:
            base = get_hardware(str(value)).model_dump()
        except UnknownHardwareError as exc:
            raise ValueError(f"{where}.{raw_key}: {exc}") from None
        base.pop("gfd_products", None)
        base.pop("name", None)
        base["description"] = base["description"] or str(value)
        base["source"] = f"{base['source']} (custom hardware based on {value})"
        base["price_source"] = f"{base['price_source']} (from {value})"
    spec: dict[str, Any] = dict(base)
    for field, (raw_key, value) in fields.items():
        here = f"{where}.{raw_key}"
        if field == "memory_bytes":
            spec[field] = parse_bytes(value, here)
        elif field in ("memory_bandwidth", "intra_node_bandwidth", "network_bandwidth"):
            spec[field] = parse_rate(value, here)
        elif field == "power_watts":
            spec[field] = parse_power(value, here)
        elif field == "peak_tflops":
            spec["peak_flops"] = _flops_table(value, here, 1e12)
        elif field == "peak_flops":
            spec["peak_flops"] = _flops_table(value, here, 1.0)
        elif field == "price_per_hour":
            spec[field] = _number(value, here)
        elif field == "gfd_products":
            items = [value] if isinstance(value, str) else value
            if not isinstance(items, list) or not all(isinstance(v, str) for v in items):
                raise ValueError(f"{here}: expected a list of nvidia.com/gpu.product values")
            spec[field] = tuple(items)
        else:
            spec[field] = value
    if "price_per_hour" in fields and "price_source" not in fields:
        spec["price_source"] = "user-provided"
    spec.setdefault("source", f"user-provided hardware ({where})")
    spec.setdefault("intra_node_bandwidth", _PCIE4)
    spec.setdefault("intra_node_link", "PCIe Gen4 x16 (assumed)")
    spec.setdefault("network_bandwidth", _NIC_100G)
    spec.setdefault("price_per_hour", 0.0)
    missing = [
        name
        for name, field in (
            ("name", "name"),
            ("memory", "memory_bytes"),
            ("bandwidth", "memory_bandwidth"),
            ("peakTflops", "peak_flops"),
            ("power", "power_watts"),
        )
        if field not in spec
    ]
    if missing:
        raise ValueError(f"{where}: missing field{'s' if len(missing) > 1 else ''} {', '.join(missing)}")
    try:
        return HardwareSpec(**spec)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'entry'}: {err['msg']}" for err in exc.errors()
        )
        raise ValueError(f"{where}: {problems}") from None


def load_hardware_yaml(path_or_text: str | Path) -> list[HardwareSpec]:
    """Custom hardware from YAML: a list of entries, ``{hardware: [...]}``, or a single entry.

    Human units are accepted: ``memory: 80GB`` / ``80GiB``, ``bandwidth: 3.35TB/s``,
    ``networkBandwidth: 400Gb/s`` (bits), ``power: 700W``, ``peakTflops: {bf16: 989, fp8: 1979}``
    (or ``peakFlops`` in FLOP/s). ``basedOn: h100-sxm`` starts from a catalog entry. Errors name
    the entry and field.
    """
    if isinstance(path_or_text, Path) or (
        "\n" not in path_or_text and path_or_text.strip().endswith((".yaml", ".yml"))
    ):
        path = Path(path_or_text)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ValueError(f"{path}: cannot read: {exc.strerror or exc}") from None
        origin = str(path)
    else:
        text, origin = path_or_text, "hardware"
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
        raise ValueError(f"{origin}: malformed YAML{at}: {getattr(exc, 'problem', exc)}") from None
    if isinstance(data, Mapping) and "hardware" in data:
        data = data["hardware"]
    entries: Iterable[object]
    if isinstance(data, Mapping):
        entries = [data]
    elif isinstance(data, list):
        entries = data
    else:
        raise ValueError(f"{origin}: expected a hardware entry or a list of them")
    prefix = "hardware" if origin == "hardware" else f"{origin}: hardware"
    return [_spec_from_yaml(entry, f"{prefix}[{i}]") for i, entry in enumerate(entries)]


def list_rows() -> list[dict[str, Any]]:
    """One row per catalog device, for ``hetsched hardware``."""
    rows: list[dict[str, Any]] = []
    for hw in _ENTRIES:
        rows.append(
            {
                "name": hw.name,
                "kind": hw.kind.value,
                "memory_gb": round(hw.memory_bytes / GB, 1),
                "bandwidth_tb_s": round(hw.memory_bandwidth / T, 3),
                "bf16_tflops": round(hw.peak_flops.get("bf16", 0.0) / T, 1),
                "fp8_tflops": round(hw.peak_flops.get("fp8", 0.0) / T, 1),
                "fp4_tflops": round(hw.peak_flops.get("fp4", 0.0) / T, 1),
                "ridge_bf16": round(hw.ridge_point("bf16"), 1),
                "link": hw.intra_node_link,
                "power_w": hw.power_watts,
                "price_per_hour": hw.price_per_hour,
                "gfd_products": ", ".join(hw.gfd_products),
            }
        )
    return rows
