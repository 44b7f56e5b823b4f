"""An engine's container for a phase on a pool, and the P/D router's: command, arguments,
environment, ports and sizes, from the registry and the plan (pure; no Kubernetes objects —
``operator/reconcile/manifests.py`` turns these into Deployments).

Arguments are templates (:func:`render_args`): ``{model}``, ``{tp}``, ... are filled from the plan;
an argument that is exactly a list-valued placeholder (the router's label selectors) expands into
several arguments. The P/D wiring (``{kv_transfer_config}``, ``{pd_role}``, ...) is appended to the
arguments unless they already use one of its placeholders or its first flag; in a colocated
container an argument that is exactly a P/D placeholder is dropped together with the flag before
it, so one argument list serves both modes.

Sizes (CPU pools: Guaranteed QoS, requests = limits):

* cpu: whole cores, TP × (the node's allocatable CPUs ÷ its devices − 2 left to the node's agents);
* memory: weights + max batch × one request's KV at ``max_model_len`` (the KV cache the engine
  allocates, rounded up to whole GiB: ``VLLM_CPU_KVCACHE_SPACE``) + runtime overhead (4 GiB + 10 %
  of the weights: Python, PyTorch and oneDNN (≈ 2 GiB resident after start-up), activation and
  sampler workspace for a batch, weight repacking and allocator slack) + the memory-backed
  ``/dev/shm`` (its pages count against the pod's memory limit).
"""

from __future__ import annotations

import json
import math
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from hetsched.scheduler.engines.pairing import KvPath, connector_of
from hetsched.scheduler.engines.platform import Platform, ServingChoice, image_for
from hetsched.scheduler.engines.registry import EngineProfile
from hetsched.scheduler.units import GIB

#: Placeholders of an engine container's arguments.
PLACEHOLDERS = ("model", "served_model_name", "tp", "max_batch", "max_model_len", "phase", "host", "port")
#: Placeholders of the P/D wiring (empty in a colocated container).
PD_PLACEHOLDERS = ("kv_transfer_config", "kv_role", "side_channel_port", "pd_role", "bootstrap_port")
POD_IP_ENV = "POD_IP"  # from the downward API (status.podIP); $(POD_IP) in args and env
RESERVED_CPUS_PER_DEVICE = 2  # whole CPUs per socket left to the node's agents (kubelet, daemonsets)
RUNTIME_OVERHEAD_BYTES = int(4 * GIB)
RUNTIME_OVERHEAD_FRACTION = 0.10  # of the weights
SHM_BYTES_TP1 = int(2 * GIB)
SHM_BYTES_TP = int(4 * GIB)  # TP > 1: collectives between ranks go through /dev/shm


def render_args(args: Sequence[str], values: Mapping[str, Any], known: Sequence[str] = ()) -> list[str]:
    """Fill ``{model}``, ``{tp}``, ... in each argument; ``{{`` and ``}}`` are literal braces.

    A value that is a list or tuple expands an argument that is exactly its placeholder into
    several arguments. A value of None drops an argument that is exactly its placeholder, and the
    flag before it (``--kv-transfer-config {kv_transfer_config}`` vanishes when colocated). An
    unknown placeholder, a list inside a longer argument, or a format spec is a ValueError naming
    the argument.
    """
    out: list[str] = []
    formatter = string.Formatter()
    names = list(known) or list(values)
    for i, arg in enumerate(args):
        try:
            parsed = list(formatter.parse(arg))
        except ValueError as exc:
            raise ValueError(f"args[{i}] {arg!r}: {exc}") from None
        fields = [(f, spec, conv) for _, f, spec, conv in parsed if f is not None]
        for name, spec, conv in fields:
            if name not in values:
                raise ValueError(
                    f"args[{i}] {arg!r}: unknown placeholder {{{name}}} (known: "
                    + ", ".join("{" + p + "}" for p in names)
                    + ")"
                )
            if spec or conv:
                raise ValueError(f"args[{i}] {arg!r}: placeholders take no format spec or conversion")
        whole = parsed[0][1] if len(parsed) == 1 and parsed[0][0] == "" else None
        if whole is not None:
            value = values[whole]
            if value is None:
                if out and out[-1].startswith("-") and i > 0 and args[i - 1] == out[-1]:
                    out.pop()
                continue
            if isinstance(value, list | tuple):
                out.extend(str(v) for v in value)
                continue
        for name, _, _ in fields:
            value = values[name]
            if value is None or isinstance(value, list | tuple):
                raise ValueError(f"args[{i}] {arg!r}: {{{name}}} must be an argument of its own")
        out.append(arg.format_map(values))
    return out


@dataclass(frozen=True, slots=True)
class PhaseTarget:
    """What the plan decided for one phase, as an engine container needs it."""

    phase: str  # prefill, decode or colocated
    pool: str
    platform: Platform
    tp: int
    max_batch: int
    max_model_len: int
    weight_bytes: float = 0.0  # resident weights of a replica
    kv_bytes_per_request: float = 0.0  # one request's KV at max_model_len, whole replica
    cpus_per_device: float = 0.0  # the node's allocatable CPUs per device (0: unknown)


@dataclass(frozen=True, slots=True)
class ContainerInput:
    """What the workload gives for a phase's container (``spec.serving.<phase>``); all optional."""

    image: str | None = None
    args: tuple[str, ...] = ()
    extra_args: tuple[str, ...] = ()
    port: int | None = None
    env: tuple[tuple[str, str], ...] = ()
    resources: Mapping[str, Mapping[str, str]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class EngineContainer:
    image: str
    image_source: str
    command: tuple[str, ...]
    args: tuple[str, ...]
    env: tuple[tuple[str, str], ...]  # plain values (may reference $(POD_IP))
    field_env: tuple[tuple[str, str], ...]  # (name, fieldPath) from the downward API
    ports: tuple[tuple[str, int], ...]  # (name, containerPort); "http" first
    health_path: str
    device_resource: str | None
    devices: int
    cpu: int | None  # whole CPUs, requests = limits (CPU pools)
    memory_bytes: int | None  # requests = limits (CPU pools)
    shm_bytes: int
    kv_cache_gib: int | None  # CPU pools: the KV cache the engine allocates
    annotations: tuple[tuple[str, str], ...] = ()
    capabilities: tuple[str, ...] = ()  # added to the container (IPC_LOCK for RDMA)
    resources: Mapping[str, Mapping[str, str]] = field(default_factory=dict)  # the user's own


def kv_transfer_config(choice: ServingChoice, role: str, path: KvPath) -> str | None:
    """The connector's JSON configuration for a role (vLLM's --kv-transfer-config), or None when the
    connector has no configuration object (SGLang)."""
    found = connector_of(choice)
    if found is None:
        return None
    _, conn = found
    if not conn.config:
        return None
    doc: dict[str, Any] = dict(conn.config)
    doc["kv_role"] = role
    if path.staged:
        doc["kv_buffer_device"] = "cpu"
    return json.dumps(doc, separators=(",", ":"))


def _ucx_tls(platform: Platform, staged: bool) -> str | None:
    """UCX transports without RDMA (None: let UCX choose, the pool has RDMA)."""
    if platform.rdma:
        return None
    base = "tcp,self,sm"
    if staged or platform.is_cpu:
        return base
    copy = {"cuda": "cuda_copy", "rocm": "rocm_copy"}.get(platform.build)
    return f"{base},{copy}" if copy else base


def _cpu_size(target: PhaseTarget) -> int | None:
    if target.cpus_per_device <= 0:
        return None
    per_device = math.floor(target.cpus_per_device)
    usable = (
        per_device - RESERVED_CPUS_PER_DEVICE if per_device > 2 * RESERVED_CPUS_PER_DEVICE else per_device
    )
    return max(1, usable) * target.tp


def cpu_memory(target: PhaseTarget) -> tuple[int, int, int]:
    """(memory bytes, KV cache GiB, /dev/shm bytes) of a CPU engine (see the module docstring)."""
    kv_gib = max(1, math.ceil(target.max_batch * target.kv_bytes_per_request / GIB))
    shm = SHM_BYTES_TP1 if target.tp == 1 else SHM_BYTES_TP
    overhead = RUNTIME_OVERHEAD_BYTES + RUNTIME_OVERHEAD_FRACTION * target.weight_bytes
    total = target.weight_bytes + kv_gib * GIB + overhead + shm
    return int(math.ceil(total / GIB) * GIB), kv_gib, int(shm)


def engine_container(
    *,
    choice: ServingChoice,
    target: PhaseTarget,
    given: ContainerInput,
    model: str,
    served_model_name: str,
    path: KvPath | None,
) -> EngineContainer:
    """The container of ``target.phase`` on its pool (``path``: the P/D pair's KV path; None when
    colocated). ValueError naming the field when the arguments do not render or no image exists."""
    profile = choice.profile
    phase = target.phase
    pinned = choice.image(phase)
    if given.image != pinned[0]:  # a container given without the choice (tests, direct calls)
        choice = _pinned(choice, phase, given.image)
    found = image_for(choice, phase, target.platform)
    if found.image is None:
        raise ValueError(found.source)
    image = found.image
    source = pinned[1] if given.image is not None and given.image == pinned[0] else found.source
    port = given.port or (profile.port if profile else 8000)
    pd = path is not None and phase != "colocated"
    values: dict[str, Any] = {
        "model": model,
        "served_model_name": served_model_name,
        "tp": target.tp,
        "max_batch": target.max_batch,
        "max_model_len": target.max_model_len,
        "phase": phase,
        # All of the pod's addresses: the Service, the router and the kubelet's probes reach it on
        # the pod IP, `kubectl port-forward` on localhost. (NIXL's side channel is what advertises
        # the pod IP to the other phase: VLLM_NIXL_SIDE_CHANNEL_HOST below.)
        "host": "0.0.0.0",
        "port": port,
    }
    values.update(dict.fromkeys(PD_PLACEHOLDERS))
    env: dict[str, str] = {}
    ports: list[tuple[str, int]] = [("http", port)]
    annotations: list[tuple[str, str]] = []
    wiring: tuple[str, ...] = ()
    if pd and profile is not None:
        assert path is not None
        found_conn = connector_of(choice)
        assert found_conn is not None
        _, conn = found_conn
        role = conn.roles[phase]
        values["kv_role"] = role
        values["pd_role"] = role
        values["kv_transfer_config"] = kv_transfer_config(choice, role, path)
        if conn.side_channel is not None:
            sc = conn.side_channel
            values["side_channel_port"] = sc.port
            env[sc.host_env] = f"$({POD_IP_ENV})"
            env[sc.port_env] = str(sc.port)
            ports.append(("kv-side", sc.port))
        if profile.pd.bootstrap_port is not None:
            values["bootstrap_port"] = profile.pd.bootstrap_port
            if phase == "prefill":
                ports.append(("kv-bootstrap", profile.pd.bootstrap_port))
                if profile.pd.bootstrap_annotation:
                    annotations.append((profile.pd.bootstrap_annotation, str(profile.pd.bootstrap_port)))
        ucx = _ucx_tls(target.platform, path.staged)
        if ucx is not None:
            env["UCX_TLS"] = ucx
        wiring = conn.args
    base = list(given.args) if given.args else list(profile.args if profile else ())
    if wiring and not _uses_wiring(base, wiring):
        base += list(wiring)
    base += list(given.extra_args)
    known = (*PLACEHOLDERS, *PD_PLACEHOLDERS)
    args = render_args(base, values, known)
    build = profile.builds.get(target.platform.build) if profile else None
    cpu = memory = kv_gib = None
    shm = SHM_BYTES_TP1 if target.tp == 1 else SHM_BYTES_TP
    if build is not None:
        env.update(build.env)
    if target.platform.is_cpu:
        cpu = _cpu_size(target)
        memory, kv_gib, shm = cpu_memory(target)
        if build is not None and build.kv_cache_env:
            env[build.kv_cache_env] = str(kv_gib)
    for name, value in given.env:  # the workload's own variables win
        env[name] = value
    # The engine's own command, in its image and in a workload's image of the same engine alike
    # (images' entrypoints differ: vllm serve, bash, ...); an engine without a profile keeps its
    # image's entrypoint.
    command = tuple(profile.command) if profile else ()
    return EngineContainer(
        image=image,
        image_source=source,
        command=command,
        args=tuple(args),
        env=tuple(env.items()),
        field_env=((POD_IP_ENV, "status.podIP"),),
        ports=tuple(ports),
        health_path=profile.health if profile else "/health",
        device_resource=None if target.platform.is_cpu else target.platform.device_resource,
        devices=0 if target.platform.is_cpu else target.tp,
        cpu=cpu,
        memory_bytes=memory,
        shm_bytes=shm,
        kv_cache_gib=kv_gib,
        annotations=tuple(annotations),
        capabilities=("IPC_LOCK",) if target.platform.rdma and pd else (),
        resources=given.resources,
    )


def _pinned(choice: ServingChoice, phase: str, image: str | None) -> ServingChoice:
    """``choice`` with the workload's image for ``phase`` (None: the registry's)."""
    if phase == "prefill":
        return replace(choice, prefill_image=image)
    if phase == "decode":
        return replace(choice, decode_image=image)
    return replace(choice, colocated_image=image)


def _uses_wiring(args: Sequence[str], wiring: Sequence[str]) -> bool:
    """Whether the user's arguments already carry the P/D wiring (its placeholders or first flag)."""
    flag = next((w for w in wiring if w.startswith("--")), None)
    joined = " ".join(args)
    return any("{" + p + "}" in joined for p in PD_PLACEHOLDERS) or (
        flag is not None and any(a == flag or a.startswith(flag + "=") for a in args)
    )


@dataclass(frozen=True, slots=True)
class RouterContainer:
    image: str
    command: tuple[str, ...]
    args: tuple[str, ...]
    port: int
    metrics_port: int
    health_path: str


def router_container(
    profile: EngineProfile,
    choice: ServingChoice,
    *,
    namespace: str,
    prefill_selector: Mapping[str, str],
    decode_selector: Mapping[str, str],
    engine_port: int,
    image: str | None = None,
) -> RouterContainer:
    """The P/D router's container: Kubernetes pod discovery by the phases' labels in ``namespace``."""
    router = profile.router
    found = connector_of(choice)
    conn = found[1] if found else None
    values: dict[str, Any] = {
        "namespace": namespace,
        "engine_port": engine_port,
        "prefill_selector": [f"{k}={v}" for k, v in sorted(prefill_selector.items())],
        "decode_selector": [f"{k}={v}" for k, v in sorted(decode_selector.items())],
        "router_port": router.port,
        "metrics_port": router.metrics_port,
        "router_kv_connector": (conn.router_kv_connector if conn else None) or "nixl",
        "bootstrap_annotation": profile.pd.bootstrap_annotation,
    }
    return RouterContainer(
        image=image or router.image,
        command=tuple(router.command),
        args=tuple(render_args(router.args, values)),
        port=router.port,
        metrics_port=router.metrics_port,
        health_path=router.health,
    )
