"""Can an engine hand a prefill's KV cache to a decode on another pool, and how (pure).

* :func:`kv_path` — for a (prefill platform, decode platform) pair and the workload's engine and
  connector: whether the connector can move KV between those kinds of hardware (CPU↔GPU only as an
  experimental pair the workload opts into), and whether the KV goes from device memory to device
  memory or is *staged* through host memory (vLLM's ``kv_buffer_device: cpu``): needed when a CPU
  takes part or the vendors differ, and chosen when the GPU architectures differ (or are unknown
  for two different devices), as those pools cannot register each other's device memory; a
  connector without host staging cannot serve the first kind of pair at all.
* :func:`tp_allowed` — the connector's TP rule (NIXL: decode TP ≥ prefill TP; Mooncake and SGLang's
  backends: equal TP).
* :func:`staged_bandwidth` — the KV transfer bandwidth of a staged pair: device → host (PCIe) on the
  prefill side, the network, host → device on the decode side, one after the other, so the time is
  ``bytes × (1/pcie_p + 1/network + 1/pcie_d)``; a CPU side has no copy (its memory is the host's).
"""

from __future__ import annotations

from dataclasses import dataclass

from hetsched.scheduler.engines.platform import Platform, ServingChoice
from hetsched.scheduler.engines.registry import Connector, Support

KV_TRANSFER = "kv-transfer"  # the engine cannot move KV between the two pools
ENGINE_TP = "engine-tp"  # the connector's TP rule rejects the pair of TP degrees


@dataclass(frozen=True, slots=True)
class KvPath:
    ok: bool
    detail: str = ""  # why not (ok False), or how (ok True)
    staged: bool = False  # through host memory (vLLM: kv_buffer_device cpu)
    experimental: bool = False
    connector: str = ""


def connector_of(choice: ServingChoice) -> tuple[str, Connector] | None:
    profile = choice.profile
    if profile is None:
        return None
    name = choice.connector or profile.pd.default
    return name, profile.connector(name)


def kv_path(choice: ServingChoice, prefill: Platform, decode: Platform) -> KvPath:
    """How ``choice``'s engine moves KV from a prefill on ``prefill`` to a decode on ``decode``."""
    profile = choice.profile
    found = connector_of(choice)
    if profile is None or found is None:
        return KvPath(
            False,
            f"engine {choice.engine} has no prefill/decode wiring in hetsched's registry "
            "(engines with one: vllm, sglang): serve it colocated",
        )
    name, conn = found
    what = f"{profile.name}'s {name} connector"
    support = conn.pair_support(_kind(prefill), _kind(decode))
    if support is None:
        return KvPath(
            False,
            f"{what} cannot move KV from {prefill.describe()}s to {decode.describe()}s",
            connector=name,
        )
    experimental = support is Support.EXPERIMENTAL
    if experimental and not choice.experimental_pairs:
        return KvPath(
            False,
            f"{what} moving KV between {_kind(prefill).upper()} and {_kind(decode).upper()} pools is "
            "experimental (no published end-to-end run): set spec.serving.allowExperimentalPairs: true "
            "to allow it",
            experimental=True,
            connector=name,
        )
    needs_host = prefill.is_cpu or decode.is_cpu or prefill.vendor != decode.vendor
    same_device = bool(prefill.hardware) and prefill.hardware == decode.hardware
    same_generation = bool(prefill.architecture) and prefill.architecture == decode.architecture
    prefers_host = needs_host or not (same_device or same_generation)
    if needs_host and not conn.host_staging:
        return KvPath(
            False,
            f"{what} moves KV from device memory to device memory only; {prefill.describe()}s and "
            f"{decode.describe()}s cannot register each other's memory",
            connector=name,
        )
    staged = prefers_host and conn.host_staging
    if not staged:
        how = "device memory to device memory"
    elif prefill.is_cpu or decode.is_cpu:
        how = "through host memory (a CPU engine's KV lives there)"
    else:
        how = "staged through host memory (the pools cannot register each other's device memory)"
    return KvPath(True, f"{what}: {how}", staged=staged, experimental=experimental, connector=name)


def tp_allowed(choice: ServingChoice, prefill_tp: int, decode_tp: int) -> tuple[bool, str]:
    """(ok, why not) of the connector's TP rule for a prefill TP and a decode TP."""
    found = connector_of(choice)
    if found is None:
        return True, ""
    name, conn = found
    if conn.tp.allows(prefill_tp, decode_tp):
        return True, ""
    profile = choice.profile
    assert profile is not None
    return False, (
        f"{profile.name}'s {name} connector needs {conn.tp.describe()} (prefill TP {prefill_tp}, "
        f"decode TP {decode_tp})"
    )


def staged_bandwidth(network: float, prefill: Platform, decode: Platform) -> float:
    """Bytes/s of KV staged through host memory: the hops run one after the other."""
    hops = [network] + [p.host_bandwidth for p in (prefill, decode) if not p.is_cpu]
    return 1.0 / sum(1.0 / h for h in hops)


def _kind(p: Platform) -> str:
    return "cpu" if p.is_cpu else ("gpu" if p.kind == "gpu" else p.kind)
