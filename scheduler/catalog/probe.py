"""Describe the CPU node this process runs on as a hardware entry (``hetsched hardware probe``).

The entry is in the catalog's YAML format (``hardware_catalog.load_hardware_yaml``; the format of
``--hardware-file``, a pool file's ``hardware:`` and AcceleratorProfiles) and describes **one socket**
(a CPU device is a socket, docs/placement.md), as seen by this process:

* **cores**: the logical CPUs the process may run on (``os.sched_getaffinity``), capped by the cgroup
  CPU quota (``cpu.max`` under cgroup v2, ``cpu.cfs_quota_us / cpu.cfs_period_us`` under v1), counted
  as physical cores (divided by the threads per core) — so it works inside a container, where
  ``/proc/cpuinfo`` shows the host;
* **ISA features** from ``/proc/cpuinfo`` flags (AMX BF16/INT8, AVX-512 F/BF16/VNNI, AVX2, FMA) and
  the microarchitecture from vendor, family and model;
* **peak FLOP/s** = cores × clock × FLOP per cycle per core of the best unit for each compute class
  (table :data:`_UNITS`, sources in each row); the clock is the base clock (sysfs
  ``base_frequency``, else the ``@ x GHz`` of the model name, else ``cpu MHz``, which under a
  hypervisor is the TSC rate); each step is written into the entry's ``source``;
* **memory**: ``MemTotal``, capped by the cgroup memory limit (``memory.max`` / ``memory.limit_in_bytes``);
* **memory bandwidth, measured**: a STREAM-like test in numpy (:func:`measure_bandwidth`): one thread
  per available core, each pinned to its core and owning a first-touched slice of three float64
  arrays of at least 4 × the last-level cache each; kernels Copy ``c = a``, Scale ``b = s·c`` and
  Add ``c = a + b`` (one numpy call per thread per repetition; numpy releases the GIL), bytes
  counted as STREAM does (16, 16 and 24 per element: reads + writes, no write-allocate traffic),
  best of N repetitions after a warm-up. The entry's ``bandwidth`` is the best Add rate: Add moves
  STREAM Triad's bytes (two reads, one write), the figure published for servers.

Parsers take file contents (tests use fixtures); :func:`probe` reads the live files.
"""

from __future__ import annotations

import datetime as _dt
import math
import os
import platform
import re
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# ---- /proc/cpuinfo -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CpuInfo:
    """What ``/proc/cpuinfo`` says about the processors (the host's, inside a container)."""

    vendor: str  # GenuineIntel, AuthenticAMD, or "" (ARM: the implementer code)
    model_name: str
    family: int | None
    model: int | None
    flags: frozenset[str]
    logical_cpus: int
    sockets: int
    cores_per_socket: int | None  # "cpu cores"
    threads_per_core: int  # siblings / cpu cores (1 when unknown)
    mhz: float | None  # "cpu MHz" of the first processor


def parse_cpuinfo(text: str) -> CpuInfo:
    """Parse ``/proc/cpuinfo`` (x86 or ARM)."""
    blocks = [b for b in re.split(r"\n\s*\n", text.strip()) if b.strip()]
    procs: list[dict[str, str]] = []
    for block in blocks:
        entry: dict[str, str] = {}
        for line in block.splitlines():
            key, sep, value = line.partition(":")
            if sep:
                entry[key.strip().lower()] = value.strip()
        if "processor" in entry:
            procs.append(entry)
    first = procs[0] if procs else {}

    def integer(key: str, base: int = 10) -> int | None:
        value = first.get(key)
        if value is None:
            return None
        try:
            return int(value, 0) if base == 0 else int(value, base)
        except ValueError:
            return None

    flags = frozenset((first.get("flags") or first.get("features") or "").split())
    sockets = len({p.get("physical id", "0") for p in procs}) or 1
    cores = integer("cpu cores")
    siblings = integer("siblings")
    threads = siblings // cores if cores and siblings and siblings >= cores else 1
    mhz: float | None
    try:
        mhz = float(first["cpu mhz"]) if "cpu mhz" in first else None
    except ValueError:
        mhz = None
    vendor = first.get("vendor_id", "")
    if not vendor and "cpu implementer" in first:
        vendor = f"arm-implementer-{first['cpu implementer']}"
    family = integer("cpu family")
    model = integer("model") if vendor in ("GenuineIntel", "AuthenticAMD") else None
    return CpuInfo(
        vendor=vendor,
        model_name=first.get("model name", "") or first.get("cpu part", ""),
        family=family,
        model=model,
        flags=flags,
        logical_cpus=len(procs),
        sockets=sockets,
        cores_per_socket=cores,
        threads_per_core=max(1, threads),
        mhz=mhz,
    )


def parse_meminfo_total(text: str) -> int | None:
    """``MemTotal`` of ``/proc/meminfo`` in bytes."""
    m = re.search(r"^MemTotal:\s+(\d+)\s*kB", text, re.MULTILINE)
    return int(m.group(1)) * 1024 if m else None


# ---- cgroups ---------------------------------------------------------------------------------------------

#: cgroup v1 reports "no limit" as a huge page-aligned number (2^63 rounded down to pages).
_NO_LIMIT = 2**62


def _cgroup_paths(proc_self_cgroup: str) -> dict[str, str]:
    """Controller → the process's cgroup path (``""`` for the cgroup v2 unified hierarchy)."""
    out: dict[str, str] = {}
    for line in proc_self_cgroup.splitlines():
        parts = line.strip().split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        for c in controllers.split(",") if controllers else [""]:
            out[c] = path
    return out


def _candidates(root: Path, controller: str, path: str) -> list[Path]:
    """Directories that may hold the process's limits, innermost first (a container often sees
    its own cgroup mounted at the root, so the root is always tried last)."""
    base = root / controller if controller else root
    dirs: list[Path] = []
    rel = path.strip("/")
    while rel:
        dirs.append(base / rel)
        rel = rel.rpartition("/")[0]
    dirs.append(base)
    return dirs


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError:
        return None


def cgroup_cpu_limit(root: Path, proc_self_cgroup: str) -> float | None:
    """CPUs the cgroup CPU quota allows (quota / period), the tightest along the path; None when
    unlimited or not visible."""
    paths = _cgroup_paths(proc_self_cgroup)
    limits: list[float] = []
    if "" in paths:  # cgroup v2
        for d in _candidates(root, "", paths[""]):
            text = _read(d / "cpu.max")
            if text:
                quota, _, period = text.partition(" ")
                if quota != "max" and period:
                    limits.append(int(quota) / int(period))
    for controller in ("cpu", "cpu,cpuacct", "cpuacct,cpu"):
        if controller not in paths:
            continue
        for mount in (controller, "cpu", "cpu,cpuacct"):
            for d in _candidates(root, mount, paths[controller]):
                quota_text, period_text = _read(d / "cpu.cfs_quota_us"), _read(d / "cpu.cfs_period_us")
                if quota_text and period_text and int(quota_text) > 0 and int(period_text) > 0:
                    limits.append(int(quota_text) / int(period_text))
        break
    return min(limits) if limits else None


def cgroup_memory_limit(root: Path, proc_self_cgroup: str) -> int | None:
    """The cgroup memory limit in bytes (tightest along the path); None when unlimited or not visible."""
    paths = _cgroup_paths(proc_self_cgroup)
    limits: list[int] = []
    if "" in paths:
        for d in _candidates(root, "", paths[""]):
            text = _read(d / "memory.max")
            if text and text != "max" and text.isdigit():
                limits.append(int(text))
    if "memory" in paths:
        for d in _candidates(root, "memory", paths["memory"]):
            text = _read(d / "memory.limit_in_bytes")
            if text and text.isdigit() and int(text) < _NO_LIMIT:
                limits.append(int(text))
    return min(limits) if limits else None


# ---- microarchitecture and FLOP per cycle ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Unit:
    """FLOP (or integer op) per cycle per core of one compute class on one microarchitecture."""

    compute_class: str  # fp32, bf16, int8
    per_cycle: float
    how: str  # the arithmetic, e.g. "2 × 128-bit FMA pipes × 4 FP32 lanes × 2"


def microarchitecture(info: CpuInfo) -> tuple[str, str]:
    """(short name, how it was recognised) from vendor, family, model and flags."""
    f, m, flags = info.family, info.model, info.flags
    if info.vendor == "AuthenticAMD" and f is not None:
        fam = f"family {f} (0x{f:x}) model {m} (0x{(m or 0):x})"
        if f == 23:
            # Zen/Zen+: models 0x00–0x2f (Naples, Summit/Pinnacle Ridge, Raven Ridge, Picasso);
            # Zen 2: 0x30 and above (Rome 0x31, Renoir 0x60, Matisse 0x71, ...).
            return ("zen2", fam) if (m or 0) >= 0x30 else ("zen", fam)
        if f == 25:
            return ("zen4", fam) if "avx512f" in flags else ("zen3", fam)
        if f == 26:
            return "zen5", fam
        return "amd-other", fam
    if info.vendor == "GenuineIntel":
        fam = f"family {f} model {m}"
        if "amx_bf16" in flags:
            return "intel-amx", f"{fam}, AMX"
        if "avx512f" in flags:
            return "intel-avx512", f"{fam}, AVX-512"
        return "intel-avx2" if "avx2" in flags else "intel-other", fam
    return "other", info.vendor or "unknown vendor"


def _fma(pipes: int, bits: int) -> Unit:
    lanes = bits // 32
    return Unit("fp32", pipes * lanes * 2, f"{pipes} × {bits}-bit FMA pipes × {lanes} FP32 lanes × 2")


#: Per microarchitecture: the best unit per compute class. Sources: Intel® 64 and IA-32
#: Architectures Optimization Reference Manual (AMX TMUL: 1024 BF16 / 2048 INT8 ops per cycle per
#: core; two 512-bit FMA units on Xeon Scalable Gold/Platinum and later); AMD Software Optimization
#: Guides for families 17h/19h/1Ah and WikiChip "FLOPS by microarchitecture"
#: (en.wikichip.org/wiki/flops): Zen/Zen+ 2 × 128-bit FMA (+ 2 × 128-bit FADD pipes that GEMMs
#: cannot use: WikiChip's 24 SP FLOP/cycle counts them), Zen 2/3 2 × 256-bit FMA, Zen 4 AVX-512
#: on 2 × 256-bit datapaths (one 512-bit VDPBF16PS per cycle), Zen 5 (server) 2 × 512-bit.
_UNITS: dict[str, list[Unit]] = {
    "zen": [_fma(2, 128)],
    "zen2": [_fma(2, 256)],
    "zen3": [_fma(2, 256)],
    "zen4": [
        _fma(2, 256),
        Unit("bf16", 64, "one 512-bit VDPBF16PS per cycle (2 × 256-bit halves) × 32 BF16 pairs × 2"),
        Unit("int8", 128, "one 512-bit VPDPBUSD per cycle × 64 INT8 MACs × 2"),
    ],
    "zen5": [
        _fma(2, 512),
        Unit("bf16", 128, "2 × 512-bit VDPBF16PS per cycle × 32 BF16 pairs × 2"),
        Unit("int8", 256, "2 × 512-bit VPDPBUSD per cycle × 64 INT8 MACs × 2"),
    ],
    "intel-avx2": [_fma(2, 256)],
    "intel-avx512": [_fma(2, 512)],
    "intel-amx": [
        _fma(2, 512),
        Unit("bf16", 1024, "AMX TMUL: 512 BF16 FMAs per cycle × 2"),
        Unit("int8", 2048, "AMX TMUL: 1024 INT8 MACs per cycle × 2"),
    ],
}


def compute_units(info: CpuInfo) -> tuple[str, str, list[Unit]]:
    """(microarchitecture, how it was recognised, units) with flags refining Intel AVX-512 parts
    (AVX-512 BF16 / VNNI without AMX: Cooper Lake, Ice Lake) and a fallback by ISA flags."""
    arch, how = microarchitecture(info)
    units = list(_UNITS.get(arch, []))
    flags = info.flags
    if arch == "intel-avx512":
        if "avx512_bf16" in flags:
            units.append(Unit("bf16", 128, "2 × 512-bit VDPBF16PS per cycle × 32 BF16 pairs × 2"))
        if "avx512_vnni" in flags:
            units.append(Unit("int8", 256, "2 × 512-bit VPDPBUSD per cycle × 64 INT8 MACs × 2"))
    if arch == "intel-amx" and "amx_int8" not in flags:
        units = [u for u in units if u.compute_class != "int8"]
    if not units:  # unknown microarchitecture: the ISA's vector width, 2 FMA pipes assumed
        if "avx512f" in flags:
            units = [_fma(2, 512)]
        elif "avx2" in flags and "fma" in flags:
            units = [_fma(2, 256)]
        elif "asimd" in flags or "sve" in flags:
            units = [_fma(2, 128)]
        else:
            units = [Unit("fp32", 8, "no FMA flag: 128-bit SSE, 1 multiply + 1 add pipe × 4 lanes")]
        how += "; FLOP per cycle from the ISA flags (2 FMA pipes assumed)"
    return arch, how, units


def isa_features(flags: frozenset[str]) -> list[str]:
    """The matrix/vector features that set the peaks, as named in ``/proc/cpuinfo``."""
    wanted = (
        "amx_bf16",
        "amx_int8",
        "amx_tile",
        "avx512f",
        "avx512_bf16",
        "avx512_vnni",
        "avx512_fp16",
        "avx_vnni",
        "avx2",
        "fma",
        "f16c",
        "asimd",
        "sve",
        "bf16",
        "i8mm",
    )
    return [f for f in wanted if f in flags]


# ---- clock ---------------------------------------------------------------------------------------------


def base_clock_ghz(info: CpuInfo, sysfs_base_khz: str | None) -> tuple[float | None, str]:
    """Base clock in GHz and where it came from (matrix/vector code under full load runs near base)."""
    if sysfs_base_khz and sysfs_base_khz.strip().isdigit():
        return int(sysfs_base_khz) / 1e6, "sysfs cpufreq base_frequency"
    m = re.search(r"@\s*([0-9.]+)\s*GHz", info.model_name)
    if m:
        return float(m.group(1)), "the model name's base clock"
    if info.mhz:
        return info.mhz / 1e3, "/proc/cpuinfo 'cpu MHz' (the current clock; the TSC rate under a hypervisor)"
    return None, "unknown"


# ---- the peaks -------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Peaks:
    flops: dict[str, float]  # compute class → FLOP/s of the whole device
    derivation: list[str]


def derive_peaks(units: list[Unit], cores: float, ghz: float) -> Peaks:
    """cores × GHz × FLOP/cycle per class. A class without its own unit runs on a wider one: BF16
    without BF16 instructions is converted and multiplied in FP32 (the fp32 rate is stored under
    bf16 too, so that BF16 models are priced at what the machine can do)."""
    flops: dict[str, float] = {}
    lines: list[str] = []
    for u in units:
        value = cores * ghz * 1e9 * u.per_cycle
        if value > flops.get(u.compute_class, 0.0):
            flops[u.compute_class] = value
            lines.append(
                f"{u.compute_class}: {cores:g} cores × {ghz:.4g} GHz × {u.per_cycle:g}/cycle ({u.how}) "
                f"= {value / 1e12:.4g} T{'OP' if u.compute_class.startswith('int') else 'FLOP'}/s"
            )
    if "bf16" not in flops and "fp32" in flops:
        flops["bf16"] = flops["fp32"]
        lines.append("bf16: no BF16 instructions: converted to FP32, at the fp32 rate")
    return Peaks(flops, lines)


# ---- the STREAM-like bandwidth test ---------------------------------------------------------------------

#: STREAM's byte counts per element (float64): reads + writes, no write-allocate traffic.
KERNEL_BYTES: dict[str, int] = {"copy": 16, "scale": 16, "add": 24}


@dataclass(frozen=True)
class BandwidthResult:
    threads: int
    elements_per_array: int  # all threads together
    repetitions: int
    best: dict[str, float]  # kernel → bytes/s (best repetition)
    median: dict[str, float]  # kernel → bytes/s (median repetition)
    pinned: bool

    @property
    def bandwidth(self) -> float:
        """The entry's figure: Add (STREAM Triad's traffic: two reads, one write), best repetition."""
        return self.best["add"]

    @property
    def array_bytes(self) -> int:
        return self.elements_per_array * 8


def measure_bandwidth(
    threads: int,
    array_bytes: int,
    repetitions: int = 10,
    cpus: list[int] | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> BandwidthResult:
    """Run the STREAM-like kernels with ``threads`` threads over three arrays of ``array_bytes``
    each (split evenly; every thread allocates and first-touches its own slice, pinned to one of
    ``cpus`` when given), ``repetitions`` timed repetitions after one warm-up; per kernel the best
    and the median rate."""
    import numpy as np

    threads = max(1, threads)
    n = max(threads * 1024, array_bytes // 8 // threads * threads)
    per = n // threads
    times: dict[str, list[float]] = {k: [] for k in KERNEL_BYTES}
    barrier = threading.Barrier(threads + 1)
    done = threading.Barrier(threads + 1)
    plan: list[str] = []
    failure: list[BaseException] = []
    pinned = [False] * threads

    def worker(i: int) -> None:
        try:
            if cpus:
                try:
                    os.sched_setaffinity(0, {cpus[i % len(cpus)]})
                    pinned[i] = True
                except (AttributeError, OSError):
                    pass
            a = np.full(per, 1.0)
            b = np.full(per, 2.0)
            c = np.zeros(per)
            while True:
                barrier.wait()
                if not plan:
                    return
                kernel = plan[-1]
                if kernel == "copy":
                    np.copyto(c, a)
                elif kernel == "scale":
                    np.multiply(c, 3.0, out=b)
                else:
                    np.add(a, b, out=c)
                done.wait()
        except BaseException as exc:  # surfaced to the caller below
            failure.append(exc)
            barrier.abort()
            done.abort()

    pool = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(threads)]
    for t in pool:
        t.start()
    try:
        for rep in range(repetitions + 1):
            for kernel in KERNEL_BYTES:
                plan.append(kernel)
                start = clock()
                barrier.wait()
                done.wait()
                if rep > 0:  # the first round is the warm-up (page faults, frequency ramp)
                    times[kernel].append(clock() - start)
        plan.clear()
        barrier.wait()
    except threading.BrokenBarrierError:
        pass
    for t in pool:
        t.join(timeout=60)
    if failure:
        raise RuntimeError(f"bandwidth test failed: {failure[0]!r}")
    best = {k: KERNEL_BYTES[k] * per * threads / min(v) for k, v in times.items()}
    median = {k: KERNEL_BYTES[k] * per * threads / sorted(v)[len(v) // 2] for k, v in times.items()}
    return BandwidthResult(threads, per * threads, repetitions, best, median, all(pinned))


# ---- the probe -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sources:
    """The files the probe reads (contents), so that tests can give fixtures."""

    cpuinfo: str
    meminfo: str
    proc_self_cgroup: str
    cgroup_root: Path
    affinity: frozenset[int]
    base_frequency_khz: str | None = None
    llc_bytes: int | None = None
    load_average: tuple[float, float, float] | None = None

    @classmethod
    def live(cls) -> Sources:
        def text(path: str) -> str:
            return _read(Path(path)) or ""

        try:
            affinity = frozenset(os.sched_getaffinity(0))
        except AttributeError:  # not Linux
            affinity = frozenset(range(os.cpu_count() or 1))
        try:
            load = os.getloadavg()
        except OSError:
            load = None
        return cls(
            cpuinfo=text("/proc/cpuinfo"),
            meminfo=text("/proc/meminfo"),
            proc_self_cgroup=text("/proc/self/cgroup"),
            cgroup_root=Path("/sys/fs/cgroup"),
            affinity=affinity,
            base_frequency_khz=_read(Path("/sys/devices/system/cpu/cpu0/cpufreq/base_frequency")),
            llc_bytes=_llc_bytes(Path("/sys/devices/system/cpu/cpu0/cache")),
            load_average=load,
        )


def _llc_bytes(cache_dir: Path) -> int | None:
    """Size of the last-level cache (the highest ``index*/level``) from sysfs."""
    best: tuple[int, int] | None = None
    if not cache_dir.is_dir():
        return None
    for index in sorted(cache_dir.glob("index*")):
        level, size = _read(index / "level"), _read(index / "size")
        if not level or not size:
            continue
        m = re.fullmatch(r"(\d+)([KMG]?)", size)
        if not m:
            continue
        nbytes = int(m.group(1)) * {"": 1, "K": 1024, "M": 2**20, "G": 2**30}[m.group(2)]
        if best is None or int(level) >= best[0]:
            best = (int(level), nbytes)
    return best[1] if best else None


@dataclass(frozen=True)
class Topology:
    """What this process may use."""

    logical_cpus: int  # affinity, capped by the quota
    cores: float  # physical cores (logical / threads per core)
    sockets: int  # sockets the entry is split over (one entry = one socket)
    quota: float | None
    affinity: int
    memory_bytes: float  # the whole node, capped by the cgroup limit
    memory_limit: int | None
    mem_total: int | None
    notes: list[str] = field(default_factory=list)


def topology(src: Sources, info: CpuInfo) -> Topology:
    quota = cgroup_cpu_limit(src.cgroup_root, src.proc_self_cgroup)
    affinity = len(src.affinity) or info.logical_cpus or 1
    logical = float(affinity) if quota is None else min(float(affinity), quota)
    cores = logical / info.threads_per_core
    notes = [f"affinity {affinity} logical CPU(s)"]
    if quota is not None:
        notes.append(f"cgroup CPU quota {quota:g} CPU(s)")
    if info.threads_per_core > 1:
        notes.append(f"{info.threads_per_core} threads per core → {cores:g} physical cores")
    # Sockets the process can use: one entry per socket, so a 2-socket node is 2 devices.
    sockets = min(info.sockets, max(1, math.ceil(cores / (info.cores_per_socket or cores or 1))))
    mem_total = parse_meminfo_total(src.meminfo)
    limit = cgroup_memory_limit(src.cgroup_root, src.proc_self_cgroup)
    memory = float(min(x for x in (mem_total, limit) if x is not None)) if (mem_total or limit) else 0.0
    return Topology(int(logical), cores, sockets, quota, affinity, memory, limit, mem_total, notes)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def default_name(info: CpuInfo, arch: str, cores: float) -> str:
    vendor = {"GenuineIntel": "intel", "AuthenticAMD": "amd"}.get(info.vendor, _slug(info.vendor) or "cpu")
    return f"cpu-{vendor}-{arch}-{cores:g}c".replace(".", "p")


def _fmt_bytes(value: float) -> str:
    return f"{value / 2**30:.4g}GiB"


def _fmt_rate(value: float) -> str:
    return f"{value / 1e9:.4g}GB/s"


#: Power per core when the machine cannot say (TDP is not visible from inside): EPYC 9654
#: 360 W / 96 cores = 3.75 W, Xeon 6980P 500 W / 128 cores = 3.9 W.
WATTS_PER_CORE = 3.75


def probe(
    name: str | None = None,
    *,
    src: Sources | None = None,
    ghz: float | None = None,
    power_watts: float | None = None,
    price_per_hour: float | None = None,
    repetitions: int = 10,
    array_bytes: int | None = None,
    measure: Callable[..., BandwidthResult] = measure_bandwidth,
    today: _dt.date | None = None,
) -> dict[str, Any]:
    """The probed entry (``{"hardware": [entry], "probe": details}``; the loader reads ``hardware``).

    ``measure`` runs the bandwidth test (tests pass a stub); ``ghz`` overrides the clock,
    ``power_watts`` the power estimate, ``price_per_hour`` the price (default 0: owned capacity,
    priced by the pool file).
    """
    src = src or Sources.live()
    info = parse_cpuinfo(src.cpuinfo)
    topo = topology(src, info)
    arch, recognised, units = compute_units(info)
    clock, clock_source = (ghz, "--ghz") if ghz else base_clock_ghz(info, src.base_frequency_khz)
    if clock is None:
        raise ValueError("cannot tell the clock from /proc/cpuinfo or sysfs: pass --ghz")
    per_socket = topo.cores / topo.sockets
    peaks = derive_peaks(units, per_socket, clock)
    llc = src.llc_bytes or 32 * 2**20
    size = array_bytes or max(4 * llc * topo.sockets, 64 * 2**20)
    if topo.memory_bytes:
        size = int(min(size, topo.memory_bytes / 16))  # three arrays: under 1/5 of the memory
    threads = max(1, topo.logical_cpus)
    cpus = sorted(src.affinity)[:threads] if src.affinity else None
    result = measure(threads, size, repetitions, cpus)
    bandwidth = result.bandwidth / topo.sockets
    memory = topo.memory_bytes / topo.sockets
    entry_name = name or default_name(info, arch, per_socket)
    date = (today or _dt.date.today()).isoformat()
    stream = ", ".join(
        f"{k} {result.best[k] / 1e9:.3g} GB/s (median {result.median[k] / 1e9:.3g})" for k in KERNEL_BYTES
    )
    load = (
        f"; load average {src.load_average[0]:.2f} during the probe" if src.load_average is not None else ""
    )
    watts = power_watts if power_watts else WATTS_PER_CORE * per_socket
    source = (
        f"hetsched hardware probe on {socket.gethostname()} ({platform.machine()}), {date}. "
        f"CPU: {info.model_name or '?'} ({info.vendor or '?'}, {recognised}; microarchitecture {arch}); "
        f"ISA: {', '.join(isa_features(info.flags)) or 'none of AMX/AVX-512/AVX2/FMA'}. "
        f"Cores: {'; '.join(topo.notes)} → {per_socket:g} cores per socket, {topo.sockets} socket(s) "
        f"(one entry per socket). Clock {clock:.4g} GHz from {clock_source}. "
        f"Peaks: {'; '.join(peaks.derivation)}. "
        f"Memory: MemTotal {topo.mem_total or 0:,} B, cgroup limit "
        f"{'none' if topo.memory_limit is None else f'{topo.memory_limit:,} B'} → {_fmt_bytes(memory)} per socket. "
        f"Bandwidth measured (STREAM-like numpy kernels, {result.threads} thread(s)"
        f"{' pinned one per CPU' if result.pinned else ''}, 3 float64 arrays of "
        f"{result.array_bytes / 2**20:.0f} MiB each (LLC {llc / 2**20:.0f} MiB), best of {result.repetitions}, "
        f"STREAM byte counts): {stream}; bandwidth = Add (Triad's traffic) / sockets{load}. "
        f"Power {'given' if power_watts else f'estimated: {WATTS_PER_CORE} W per core (not visible from inside)'}."
    )
    entry: dict[str, Any] = {
        "name": entry_name,
        "description": f"{info.model_name or 'CPU'} ({arch}), {per_socket:g} cores, probed {date}",
        "kind": "cpu",
        "vendor": {"GenuineIntel": "Intel", "AuthenticAMD": "AMD"}.get(info.vendor, info.vendor),
        "memory": _fmt_bytes(memory),
        "bandwidth": _fmt_rate(bandwidth),
        "peakTflops": {k: float(f"{v / 1e12:.6g}") for k, v in sorted(peaks.flops.items())},
        "power": f"{watts:.4g}W",
        "pricePerHour": float(price_per_hour or 0.0),
        "priceSource": (
            "given to hetsched hardware probe"
            if price_per_hour
            else "0: owned capacity; set the pool's pricePerDeviceHour (docs/pools.md, pricing CPU capacity)"
        ),
        "source": source,
    }
    details: dict[str, Any] = {
        "date": date,
        "host": socket.gethostname(),
        "cpu": {
            "vendor": info.vendor,
            "model_name": info.model_name,
            "family": info.family,
            "model": info.model,
            "microarchitecture": arch,
            "isa": isa_features(info.flags),
            "logical_cpus_on_host": info.logical_cpus,
            "sockets_on_host": info.sockets,
            "threads_per_core": info.threads_per_core,
        },
        "available": {
            "affinity_cpus": topo.affinity,
            "cgroup_cpu_quota": topo.quota,
            "cores": topo.cores,
            "sockets": topo.sockets,
            "mem_total_bytes": topo.mem_total,
            "cgroup_memory_limit_bytes": topo.memory_limit,
        },
        "clock_ghz": clock,
        "clock_source": clock_source,
        "peaks": peaks.derivation,
        "bandwidth_test": {
            "kernels": "numpy copy/scale/add, STREAM byte counts",
            "threads": result.threads,
            "pinned": result.pinned,
            "array_mib": round(result.array_bytes / 2**20, 1),
            "repetitions": result.repetitions,
            "best_gb_s": {k: round(v / 1e9, 3) for k, v in result.best.items()},
            "median_gb_s": {k: round(v / 1e9, 3) for k, v in result.median.items()},
        },
        "load_average": list(src.load_average) if src.load_average is not None else None,
        "devices_per_node": topo.sockets,
    }
    return {"hardware": [entry], "probe": details}


def render_yaml(doc: Mapping[str, Any]) -> str:
    """The probe's document as YAML, with a header saying how to use it."""
    import yaml

    entry = doc["hardware"][0]
    sockets = doc["probe"]["devices_per_node"]
    head = (
        f"# Written by `hetsched hardware probe`. One entry = one socket of this node ({sockets} per node:\n"
        f"# label the node hetsched.io/devices-per-node={sockets}). Use it with\n"
        f"#   hetsched estimate --hardware-file THIS.yaml --hardware {entry['name']} ...\n"
        "#   hetsched validate --hardware-file THIS.yaml --measurements RUNS.csv\n"
        "# or copy the entry into a pool file's `hardware:` list (docs/pools.md). `source` holds the\n"
        "# derivation of every number; `probe` (ignored by the loader) the raw measurements.\n"
    )
    body = yaml.safe_dump(dict(doc), sort_keys=False, allow_unicode=True, width=100)
    return head + body


__all__ = [
    "KERNEL_BYTES",
    "BandwidthResult",
    "CpuInfo",
    "Peaks",
    "Sources",
    "Topology",
    "Unit",
    "base_clock_ghz",
    "cgroup_cpu_limit",
    "cgroup_memory_limit",
    "compute_units",
    "default_name",
    "derive_peaks",
    "isa_features",
    "measure_bandwidth",
    "microarchitecture",
    "parse_cpuinfo",
    "parse_meminfo_total",
    "probe",
    "render_yaml",
    "topology",
]
