"""Hardware and price of live pools: AcceleratorProfiles first, then the catalog.

For a pool, the hardware comes from the first of:

1. an AcceleratorProfile with ``matchPool`` = the pool's name that defines hardware;
2. an AcceleratorProfile with ``matchGpuProduct`` = the pool's ``nvidia.com/gpu.product``;
3. the nodes' ``hetsched.io/hardware`` label (a catalog key);
4. the catalog's GPU Feature Discovery mapping of the product label.

The price per device-hour comes from the first of: the pool profile's ``pricePerHour``, the product
profile's, the nodes' ``hetsched.io/price-per-device-hour`` label, the hardware's catalog price. A
profile with only ``pricePerHour`` overrides the price and leaves the hardware to the chain. A price
label that is not a number (and no profile price) refuses the pool (``price-invalid``), with the
message ``hetsched plan --nodes`` fails with (``scheduler.nodes.label_price``).
Pure functions: the operator calls them with its index contents, the tests with plain dicts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hetsched.operator.reconcile.status import now_rfc3339, set_condition
from hetsched.scheduler import catalog
from hetsched.scheduler.catalog.hardware import HardwareSpec
from hetsched.scheduler.engines.platform import PoolServing
from hetsched.scheduler.nodes import LivePool, label_price
from hetsched.scheduler.pools import HARDWARE_UNKNOWN, PRICE_INVALID
from hetsched.scheduler.spec import AcceleratorProfileSpec, format_validation_error
from pydantic import ValidationError


@dataclass(frozen=True, slots=True)
class Profile:
    name: str
    spec: AcceleratorProfileSpec
    hardware: HardwareSpec | None  # None: price-only profile


@dataclass(frozen=True, slots=True)
class ResolvedPool:
    pool: LivePool
    hardware: HardwareSpec | None
    hardware_source: str
    price_per_device_hour: float | None
    price_source: str
    problem: str = ""  # why the pool cannot be planned on ("" when it can)
    reason: str = ""  # HARDWARE_UNKNOWN or PRICE_INVALID with a problem
    serving: PoolServing | None = None  # the first matching profile's serving overrides (pool first)


def parse_profile(name: str, spec: Mapping[str, Any]) -> Profile:
    """Validate an AcceleratorProfile spec and build its hardware (ValueError naming the field)."""
    try:
        parsed = AcceleratorProfileSpec.model_validate(dict(spec))
    except ValidationError as exc:
        raise ValueError(f"spec: {format_validation_error(exc)}") from None
    hardware = None
    if parsed.defines_hardware:
        from hetsched.scheduler.catalog import hardware_catalog

        entry = parsed.hardware_entry(name)
        entry.setdefault("source", f"AcceleratorProfile/{name}")
        hardware = hardware_catalog.hardware_from_entry(entry, "spec")
    return Profile(name, parsed, hardware)


def parse_profiles(raw: Mapping[str, Mapping[str, Any]]) -> tuple[list[Profile], dict[str, str]]:
    """Profiles that parse, and the problems of those that do not (by name)."""
    ok: list[Profile] = []
    bad: dict[str, str] = {}
    for name in sorted(raw):
        try:
            ok.append(parse_profile(name, raw[name]))
        except ValueError as exc:
            bad[name] = str(exc)
    return ok, bad


def resolve_pool(pool: LivePool, profiles: list[Profile]) -> ResolvedPool:
    by_pool = [p for p in profiles if p.spec.match_pool == pool.name]
    by_product = [p for p in profiles if pool.gpu_product and p.spec.match_gpu_product == pool.gpu_product]
    hardware: HardwareSpec | None = None
    source = ""
    for group, what in ((by_pool, "pool"), (by_product, "GPU product")):
        for p in group:
            if p.hardware is not None:
                hardware, source = p.hardware, f"AcceleratorProfile/{p.name} (matches the {what})"
                break
        if hardware is not None:
            break
    problem = reason = ""
    if hardware is None:
        if pool.hardware_hint:
            hardware = catalog.get_hardware(pool.hardware_hint)
            source = f"catalog ({pool.hardware_hint}, from the hetsched.io/hardware label)"
        if hardware is None and pool.gpu_product:
            hardware = catalog.hardware_for_gfd_product(pool.gpu_product)
            source = f"catalog (nvidia.com/gpu.product={pool.gpu_product})"
        if hardware is None:
            tried = []
            if pool.hardware_hint:
                tried.append(f"hetsched.io/hardware={pool.hardware_hint} is not a catalog key")
            if pool.gpu_product:
                tried.append(f"no catalog entry for nvidia.com/gpu.product={pool.gpu_product}")
            if not tried:
                tried.append(
                    "its nodes have neither a hetsched.io/hardware nor a nvidia.com/gpu.product label"
                )
            problem = "; ".join(tried) + " — create an AcceleratorProfile with matchPool: " + pool.name
            reason, source = HARDWARE_UNKNOWN, ""
    price: float | None = None
    price_source = ""
    for group in (by_pool, by_product):
        for p in group:
            if p.spec.price_per_hour is not None:
                price, price_source = p.spec.price_per_hour, f"AcceleratorProfile/{p.name}"
                break
        if price is not None:
            break
    if price is None:
        try:
            price = label_price(pool)
        except ValueError as exc:
            if not problem:
                problem, reason = str(exc), PRICE_INVALID
        else:
            if price is not None:
                price_source = "node label hetsched.io/price-per-device-hour"
    if price is None and hardware is not None and not problem:
        price, price_source = hardware.price_per_hour, hardware.price_source or "catalog"
    serving = next((p.spec.serving for p in (*by_pool, *by_product) if p.spec.serving is not None), None)
    return ResolvedPool(pool, hardware, source, price, price_source, problem, reason, serving)


def profile_status(
    name: str, spec: Mapping[str, Any], status: Mapping[str, Any] | None, generation: int
) -> tuple[dict[str, Any], str | None]:
    """An AcceleratorProfile's status fields (condition ``Accepted``, the hardware and price it
    resolves to) and, when its spec is invalid, the error (the status says it too)."""
    conditions = list((status or {}).get("conditions") or [])
    now = now_rfc3339()
    try:
        profile = parse_profile(name, spec)
    except ValueError as exc:
        return {
            "conditions": set_condition(
                conditions, "Accepted", False, "InvalidSpec", str(exc), generation=generation, now=now
            ),
            "observedGeneration": generation,
        }, str(exc)
    hardware = profile.hardware.name if profile.hardware is not None else None
    what = (
        f"hardware {hardware}"
        if hardware
        else ("price override" if profile.spec.price_per_hour is not None else "serving override")
    )
    match = ", ".join(
        f"{k}={v}"
        for k, v in (("pool", profile.spec.match_pool), ("gpu product", profile.spec.match_gpu_product))
        if v
    )
    return {
        "conditions": set_condition(
            conditions, "Accepted", True, "Accepted", f"{what} for {match}", generation=generation, now=now
        ),
        "observedGeneration": generation,
        "hardware": hardware,
        "pricePerDeviceHour": (
            profile.spec.price_per_hour
            if profile.spec.price_per_hour is not None
            else (profile.hardware.price_per_hour if profile.hardware is not None else None)
        ),
    }, None
