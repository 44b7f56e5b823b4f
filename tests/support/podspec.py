"""What a kubelet makes of a pod spec before it starts a container, as pure functions: the environment
(downward API, service links, ``$(VAR)`` expansion), the command line, the QoS class and the CPUs the
static CPU manager would give each container, and the probes. :mod:`support.kubelet` runs the result
as local processes; the unit tests in ``tests/unit/support`` pin each rule to the kubelet's.

Each rule follows the kubelet's own (Kubernetes v1.36):

* ``$(VAR)`` references (``third_party/forked/golang/expansion``): replaced by the variable's value
  when it is defined, left as written when not; ``$$`` is a literal ``$``. Env values see the
  variables defined before them and the service links; ``command`` and ``args`` see the whole env.
* Service links (``enableServiceLinks``, default true): ``<NAME>_SERVICE_HOST``/``_PORT`` ... for each
  Service of the pod's namespace with a cluster IP, and always for the ``kubernetes`` Service.
* The static CPU manager gives a container exclusive CPUs when its pod is Guaranteed (every container
  has cpu and memory limits, requests equal to them) and its cpu is a whole number.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

WILDCARD_ADDRESSES = ("0.0.0.0", "::", "[::]")


class UnsupportedPodSpec(ValueError):
    """A pod uses something the local kubelet does not emulate (named in the message)."""


def expand(text: str, lookup: Callable[[str], str | None]) -> str:
    """Expand ``$(VAR)`` in ``text`` as the kubelet does; ``lookup`` returns None for undefined."""
    out: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch != "$" or i + 1 >= len(text):
            out.append(ch)
            i += 1
            continue
        nxt = text[i + 1]
        if nxt == "$":  # escaped: $$ -> $
            out.append("$")
            i += 2
        elif nxt == "(":
            end = text.find(")", i + 2)
            if end < 0:  # incomplete reference: kept as written
                out.append("$(")
                i += 2
                continue
            name = text[i + 2 : end]
            value = lookup(name)
            out.append(f"$({name})" if value is None else value)
            i = end + 1
        else:
            out.append("$" + nxt)
            i += 2
    return "".join(out)


_QUANTITY = re.compile(r"^([+-]?[0-9.]+)([eE][+-]?[0-9]+|[KMGTPE]i|[numkMGTPE])?$")
_SUFFIX = {
    "": Decimal(1),
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "k": Decimal(10**3),
    "M": Decimal(10**6),
    "G": Decimal(10**9),
    "T": Decimal(10**12),
    "P": Decimal(10**15),
    "E": Decimal(10**18),
    "Ki": Decimal(2**10),
    "Mi": Decimal(2**20),
    "Gi": Decimal(2**30),
    "Ti": Decimal(2**40),
    "Pi": Decimal(2**50),
    "Ei": Decimal(2**60),
}


def quantity(value: str | int | float) -> Decimal:
    """A Kubernetes resource quantity ("500m", "8Gi", "1e3", 2) as a Decimal."""
    text = str(value).strip()
    match = _QUANTITY.match(text)
    if not match:
        raise ValueError(f"not a Kubernetes quantity: {value!r}")
    number, suffix = match.group(1), match.group(2) or ""
    if suffix[:1] in ("e", "E"):
        return Decimal(number) * Decimal(10) ** int(suffix[1:])
    return Decimal(number) * _SUFFIX[suffix]


def _resources(container: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    res = container.get("resources") or {}
    limits = dict(res.get("limits") or {})
    requests = dict(res.get("requests") or {})
    for key, value in limits.items():  # a limit without a request: the request defaults to it
        requests.setdefault(key, value)
    return requests, limits


def qos_class(pod: Mapping[str, Any]) -> str:
    """Guaranteed, Burstable or BestEffort, from the containers' cpu and memory (as the kubelet)."""
    containers = list(pod["spec"].get("containers") or []) + list(pod["spec"].get("initContainers") or [])
    any_set = False
    guaranteed = True
    for container in containers:
        requests, limits = _resources(container)
        for resource in ("cpu", "memory"):
            if resource in requests or resource in limits:
                any_set = True
            if resource not in limits or quantity(requests[resource]) != quantity(limits[resource]):
                guaranteed = False
    if not any_set:
        return "BestEffort"
    return "Guaranteed" if guaranteed else "Burstable"


def exclusive_cpus(pod: Mapping[str, Any], container: Mapping[str, Any]) -> int:
    """CPUs the static CPU manager pins to this container alone (0: it runs on the shared pool)."""
    if qos_class(pod) != "Guaranteed":
        return 0
    requests, _ = _resources(container)
    cpu = quantity(requests["cpu"])
    return int(cpu) if cpu == cpu.to_integral_value() and cpu >= 1 else 0


def service_env(services: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """The Docker-links-style variables the kubelet sets for Services (``<NAME>_SERVICE_HOST`` ...)."""
    env: dict[str, str] = {}
    for svc in services:
        spec = svc.get("spec") or {}
        ip = spec.get("clusterIP")
        if not ip or ip == "None":
            continue
        name = svc["metadata"]["name"].upper().replace("-", "_")
        ports = spec.get("ports") or []
        env[f"{name}_SERVICE_HOST"] = ip
        if not ports:
            continue
        env[f"{name}_SERVICE_PORT"] = str(ports[0]["port"])
        for port in ports:
            if port.get("name"):
                env[f"{name}_SERVICE_PORT_{port['name'].upper().replace('-', '_')}"] = str(port["port"])
        first = ports[0]
        env[f"{name}_PORT"] = f"{first.get('protocol', 'TCP').lower()}://{ip}:{first['port']}"
        for port in ports:
            proto = port.get("protocol", "TCP")
            prefix = f"{name}_PORT_{port['port']}_{proto}"
            env[prefix] = f"{proto.lower()}://{ip}:{port['port']}"
            env[f"{prefix}_PROTO"] = proto.lower()
            env[f"{prefix}_PORT"] = str(port["port"])
            env[f"{prefix}_ADDR"] = ip
    return env


@dataclass(frozen=True)
class PodContext:
    """What the downward API can read of a running pod."""

    pod: Mapping[str, Any]
    pod_ip: str
    host_ip: str

    def field(self, path: str) -> str:
        meta = self.pod["metadata"]
        spec = self.pod["spec"]
        simple = {
            "metadata.name": meta.get("name"),
            "metadata.namespace": meta.get("namespace"),
            "metadata.uid": meta.get("uid"),
            "spec.nodeName": spec.get("nodeName"),
            "spec.serviceAccountName": spec.get("serviceAccountName", "default"),
            "status.podIP": self.pod_ip,
            "status.podIPs": self.pod_ip,
            "status.hostIP": self.host_ip,
            "status.hostIPs": self.host_ip,
        }
        if path in simple:
            return str(simple[path] or "")
        match = re.fullmatch(r"metadata\.(labels|annotations)\['([^']+)'\]", path)
        if match:
            return str((meta.get(match.group(1)) or {}).get(match.group(2), ""))
        raise UnsupportedPodSpec(f"downward API fieldRef {path!r} is not supported")

    def resource(self, container: Mapping[str, Any], ref: Mapping[str, Any]) -> str:
        requests, limits = _resources(container)
        kind, _, resource = str(ref["resource"]).partition(".")
        source = limits if kind == "limits" else requests
        if resource not in source:
            raise UnsupportedPodSpec(f"resourceFieldRef {ref['resource']!r}: not set in the container")
        value = quantity(source[resource]) / quantity(ref.get("divisor", "1"))
        return str(math.ceil(value))


def container_env(
    ctx: PodContext,
    container: Mapping[str, Any],
    services: Sequence[Mapping[str, Any]],
    master_service: Mapping[str, Any] | None = None,
) -> dict[str, str]:
    """The container's environment as the kubelet builds it (without the image's own variables)."""
    links = service_env([master_service] if master_service else [])
    if ctx.pod["spec"].get("enableServiceLinks", True):
        links = service_env(list(services)) | links
    if container.get("envFrom"):
        raise UnsupportedPodSpec(f"container {container['name']!r}: envFrom is not supported")
    env: dict[str, str] = {}

    def lookup(name: str) -> str | None:
        return env.get(name, links.get(name))

    for item in container.get("env") or []:
        name = item["name"]
        if "valueFrom" in item:
            source = item["valueFrom"]
            if "fieldRef" in source:
                env[name] = ctx.field(source["fieldRef"]["fieldPath"])
            elif "resourceFieldRef" in source:
                env[name] = ctx.resource(container, source["resourceFieldRef"])
            else:
                raise UnsupportedPodSpec(f"env {name!r}: only fieldRef and resourceFieldRef are supported")
        else:
            env[name] = expand(str(item.get("value", "")), lookup)
    for key, value in links.items():
        env.setdefault(key, value)
    return env


@dataclass(frozen=True)
class Substitution:
    """One place where a local process differs from what the container would run."""

    kind: str  # "interpreter" or "wildcard-address"
    before: str
    after: str


def command_line(
    container: Mapping[str, Any],
    env: Mapping[str, str],
    interpreters: Mapping[str, str],
    pod_ip: str,
) -> tuple[list[str], list[Substitution]]:
    """``command`` + ``args`` with ``$(VAR)`` expanded; the executable mapped through ``interpreters``
    (the image's ``python3`` -> a local venv's), and wildcard listen addresses (``0.0.0.0``) narrowed to
    the pod's own address, which is what they mean in a pod's network namespace."""
    command = list(container.get("command") or [])
    if not command:
        raise UnsupportedPodSpec(
            f"container {container['name']!r} has no command: the image's entrypoint is not known locally"
        )
    argv = [expand(str(a), env.get) for a in command + list(container.get("args") or [])]
    subs: list[Substitution] = []
    exe = argv[0]
    if exe not in interpreters:
        raise UnsupportedPodSpec(f"container {container['name']!r}: no local executable for {exe!r}")
    argv[0] = interpreters[exe]
    subs.append(Substitution("interpreter", exe, argv[0]))
    for i, arg in enumerate(argv[1:], start=1):
        flag, eq, value = arg.partition("=")
        if arg in WILDCARD_ADDRESSES:
            argv[i] = pod_ip
        elif eq and flag.startswith("-") and value in WILDCARD_ADDRESSES:
            argv[i] = f"{flag}={pod_ip}"
        else:
            continue
        subs.append(Substitution("wildcard-address", arg, argv[i]))
    return argv, subs


@dataclass(frozen=True)
class Probe:
    kind: str  # "httpGet" or "tcpSocket"
    port: int
    path: str = "/"
    host: str | None = None
    scheme: str = "HTTP"
    initial_delay: float = 0
    period: float = 10
    timeout: float = 1
    success_threshold: int = 1
    failure_threshold: int = 3


def container_port(container: Mapping[str, Any], port: int | str) -> int:
    if isinstance(port, int) or str(port).isdigit():
        return int(port)
    for item in container.get("ports") or []:
        if item.get("name") == port:
            return int(item["containerPort"])
    raise UnsupportedPodSpec(f"container {container['name']!r}: no port named {port!r}")


def probe(container: Mapping[str, Any], which: str) -> Probe | None:
    """``readinessProbe``, ``livenessProbe`` or ``startupProbe`` of a container (None: not set)."""
    spec = container.get(which)
    if not spec:
        return None
    common = {
        "initial_delay": float(spec.get("initialDelaySeconds", 0)),
        "period": float(spec.get("periodSeconds", 10)),
        "timeout": float(spec.get("timeoutSeconds", 1)),
        "success_threshold": int(spec.get("successThreshold", 1)),
        "failure_threshold": int(spec.get("failureThreshold", 3)),
    }
    if "httpGet" in spec:
        get = spec["httpGet"]
        if get.get("httpHeaders"):
            raise UnsupportedPodSpec(f"{which}: httpHeaders are not supported")
        return Probe(
            "httpGet",
            container_port(container, get["port"]),
            path=get.get("path", "/"),
            host=get.get("host"),
            scheme=get.get("scheme", "HTTP"),
            **common,
        )
    if "tcpSocket" in spec:
        return Probe("tcpSocket", container_port(container, spec["tcpSocket"]["port"]), **common)
    raise UnsupportedPodSpec(f"{which}: only httpGet and tcpSocket probes are supported")
