"""Built-in hardware (``data/hardware.yaml``: datasheet peaks, memory, links, power and an indicative
price per device, each with its source and the conventions it follows), lookups by name, alias and
GPU Feature Discovery product label, and the loader of hardware entries in human units — the
catalog's own data file, ``--hardware-file``, a pool file's ``hardware:`` entries and
AcceleratorProfiles all go through :func:`hardware_from_entry`.

Every catalog entry carries the efficiency fitted against measured serving
(``estimator/efficiency.py``; docs/calibration.md); ``--efficiency ideal`` ignores it.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from hetsched.scheduler.catalog.hardware import HardwareSpec
from hetsched.scheduler.estimator.efficiency import calibrate
from hetsched.scheduler.units import GB, T
from pydantic import ValidationError


class UnknownHardwareError(KeyError, ValueError):
    """No catalog hardware of that name; the message lists close names."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


_PCIE4 = 32 * GB  # PCIe Gen4 ×16, per direction: a custom entry's default intra-node link
_NIC_100G = 100e9 / 8  # one 100 Gb/s NIC per device: a custom entry's default network

DATA_PATH = Path(__file__).resolve().parent / "data" / "hardware.yaml"

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
    "architecture": "architecture",
    "memory": "memory_bytes",
    "memorybytes": "memory_bytes",
    "bandwidth": "memory_bandwidth",
    "memorybandwidth": "memory_bandwidth",
    "peaktflops": "peak_tflops",
    "peakflops": "peak_flops",
    "intranodebandwidth": "intra_node_bandwidth",
    "intranodelink": "intra_node_link",
    "networkbandwidth": "network_bandwidth",
    "hostbandwidth": "host_bandwidth",
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
    "architecture",
    "memory",
    "bandwidth",
    "peakTflops",
    "peakFlops",
    "intraNodeBandwidth",
    "intraNodeLink",
    "networkBandwidth",
    "hostBandwidth",
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


def hardware_from_entry(entry: object, where: str) -> HardwareSpec:
    """One hardware entry (a mapping of the YAML fields, human units); ValueError naming ``where``
    and the field."""
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
        elif field in ("memory_bandwidth", "intra_node_bandwidth", "network_bandwidth", "host_bandwidth"):
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
        hardware = HardwareSpec(**spec)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'entry'}: {err['msg']}" for err in exc.errors()
        )
        raise ValueError(f"{where}: {problems}") from None
    # The calibrated efficiency (estimator/efficiency.py) as for catalog entries: the family of the
    # name or kind (a CPU entry gets the CPU fit), else the generic fit; ``basedOn`` keeps the
    # base entry's.
    return hardware if base else calibrate(hardware)


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
    return hardware_from_entries(entries, prefix)


def hardware_from_entries(entries: Iterable[object], prefix: str = "hardware") -> list[HardwareSpec]:
    """Hardware entries already parsed (mappings of the YAML fields), errors naming ``prefix[i]``."""
    return [hardware_from_entry(entry, f"{prefix}[{i}]") for i, entry in enumerate(entries)]


# The catalog's own file through libyaml when it is there (the CLI reads it at start: ~7 × faster).
_ENTRIES: list[HardwareSpec] = hardware_from_entries(
    yaml.load(DATA_PATH.read_text(encoding="utf-8"), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))[
        "hardware"
    ],
    f"{DATA_PATH}: hardware",
)
# Each entry gets the efficiency fitted against measured serving (estimator/efficiency.py;
# docs/calibration.md); ``--efficiency ideal`` ignores it.
HARDWARE: dict[str, HardwareSpec] = {hw.name: calibrate(hw) for hw in _ENTRIES}


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
