"""A minimal kubelet for the real-engine tests: it registers Nodes in a real local API server and runs
the pods that the real scheduler binds to them as local processes.

What it does, as a kubelet would (rules in :mod:`support.podspec`):

* **Nodes**: creates them (labels and capacity from a pool file entry, e.g. ``hetsched.io/pool``),
  reports them Ready and renews their Lease every 10 s; each node is backed by some of this machine's
  cores (``host_cpus``).
* **Pods** bound to its nodes (Deployment -> ReplicaSet -> Pod by the controller-manager, placed by the
  scheduler): a distinct loopback address per pod as ``status.podIP`` (all of 127.0.0.0/8 is loopback),
  the environment with the downward API, service links and ``$(VAR)`` expansion, the service account
  token (as a kubeconfig, since a local process has no in-cluster mount), the static CPU manager's
  exclusive cores for Guaranteed containers (``taskset``), each container in its own process group.
* **Probes** (startup, liveness, readiness: httpGet/tcpSocket against the pod IP), the Ready
  condition, restarts with the kubelet's back-off (immediately, then 10 s doubling to 300 s) when a
  container exits, graceful deletion (SIGTERM, the grace period, SIGKILL, then the pod object goes).

What differs from a pod, and nothing else (:attr:`MiniKubelet.substitutions` lists each instance):
the container's executable maps to a local one (``python3`` -> the engine venv's interpreter,
``vllm-router`` -> its binary), and a wildcard listen address (``0.0.0.0``) is narrowed to the pod's
own address, which is what it means inside a pod's network namespace. The image's environment is a
plain PATH/HOME/LANG; volumes are not mounted (the host's files are visible); the pods share this
machine's network, IPC and PID namespaces.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime as dt
import http.client
import json
import os
import random
import signal
import socket
import ssl
import subprocess
import threading
import time
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from support.podspec import (
    PodContext,
    Probe,
    Substitution,
    command_line,
    container_env,
    exclusive_cpus,
    probe,
)

IMAGE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
HOST_IP = "127.0.0.1"
LEASE_SECONDS = 40
RENEW_SECONDS = 10
BACKOFF_START, BACKOFF_MAX = 10.0, 300.0


def now_rfc3339(micro: bool = False) -> str:
    t = dt.datetime.now(dt.UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ" if micro else "%Y-%m-%dT%H:%M:%SZ")


class ApiError(RuntimeError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


class KubeApi:
    """A small JSON client of the API server (client certificate, e.g. the local cluster's admin)."""

    def __init__(self, server: str, ca: Path, cert: Path, key: Path) -> None:
        url = urllib.parse.urlparse(server)
        self.server = server
        self.host, self.port = url.hostname or "127.0.0.1", url.port or 443
        self.ca = ca
        self.context = ssl.create_default_context(cafile=str(ca))
        self.context.load_cert_chain(str(cert), str(key))

    def request(
        self, method: str, path: str, body: Any = None, content_type: str = "application/json"
    ) -> Any:
        conn = http.client.HTTPSConnection(self.host, self.port, context=self.context, timeout=30)
        try:
            data = None if body is None else json.dumps(body)
            conn.request(method, path, data, {"Content-Type": content_type, "Accept": "application/json"})
            resp = conn.getresponse()
            raw = resp.read()
        finally:
            conn.close()
        if resp.status >= 300:
            raise ApiError(resp.status, f"{method} {path}: {raw[:300].decode(errors='replace')}")
        return json.loads(raw) if raw else None

    def get(self, path: str) -> Any:
        return self.request("GET", path)

    def post(self, path: str, body: Any) -> Any:
        return self.request("POST", path, body)

    def merge_patch(self, path: str, body: Any) -> Any:
        return self.request("PATCH", path, body, "application/merge-patch+json")

    def delete(self, path: str, body: Any = None) -> Any:
        return self.request("DELETE", path, body)


@dataclass(frozen=True)
class NodeSpec:
    """A node this kubelet serves: its Node object (labels, capacity) and the host cores behind it."""

    name: str
    labels: Mapping[str, str]
    capacity: Mapping[str, str]
    host_cpus: tuple[int, ...]
    taints: tuple[Mapping[str, str], ...] = ()


@dataclass
class ContainerRun:
    name: str
    spec: Mapping[str, Any]
    argv: list[str]
    env: dict[str, str]
    cpus: tuple[int, ...]
    exclusive: bool
    log: Path
    substitutions: list[Substitution]
    proc: subprocess.Popen[bytes] | None = None
    started_at: float | None = None
    started_rfc: str = ""
    restarts: int = 0
    ready: bool = False
    started: bool = False  # the startup probe passed (or there is none)
    last_exit: int | None = None
    waiting_reason: str = ""
    ready_times: list[float] = field(default_factory=list)  # monotonic times it became Ready


@dataclass
class PodRun:
    namespace: str
    name: str
    uid: str
    node: str
    ip: str
    pod: Mapping[str, Any]
    directory: Path
    containers: list[ContainerRun] = field(default_factory=list)
    started_rfc: str = ""
    stopping: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def labels(self) -> Mapping[str, str]:
        return self.pod["metadata"].get("labels") or {}


class MiniKubelet:
    """Serve ``nodes`` of the cluster behind ``api``; see the module docstring."""

    def __init__(
        self,
        api: KubeApi,
        nodes: Sequence[NodeSpec],
        interpreters: Mapping[str, str],
        workdir: Path,
        *,
        ip_prefix: str | None = None,
        sync_interval: float = 0.5,
        cpu_manager_policy: str = "static",
    ) -> None:
        if cpu_manager_policy not in ("static", "none"):
            raise ValueError(f"cpu_manager_policy: 'static' or 'none', not {cpu_manager_policy!r}")
        # "static": Guaranteed containers with whole cpus get exclusive cores (what CPU pools need);
        # "none": the kubelet's default, every container on all of its node's cores.
        self.cpu_manager_policy = cpu_manager_policy
        self.api = api
        self.nodes = {n.name: n for n in nodes}
        self.interpreters = dict(interpreters)
        self.workdir = workdir
        # A random /24 of 127/8 per kubelet, so concurrent test runs on one machine do not collide.
        self.ip_prefix = ip_prefix or f"127.{random.randint(64, 254)}.{random.randint(1, 254)}."
        self.sync_interval = sync_interval
        self.pods: dict[str, PodRun] = {}
        self.events: list[str] = []
        self._next_ip = 2
        self._allocated: dict[str, set[int]] = {n.name: set() for n in nodes}
        self._lock = threading.RLock()
        self._status_lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        workdir.mkdir(parents=True, exist_ok=True)

    # lifecycle
    def start(self) -> MiniKubelet:
        for node in self.nodes.values():
            self._register(node)
        for target in (self._lease_loop, self._sync_loop):
            t = threading.Thread(target=target, name=f"kubelet-{target.__name__}", daemon=True)
            t.start()
            self._threads.append(t)
        atexit.register(self._kill_all)
        return self

    def stop(self, grace: float = 10) -> None:
        """Stop every process started here (SIGTERM, then SIGKILL after ``grace``) and the loops."""
        self._stop.set()
        with self._lock:
            runs = list(self.pods.values())
        for run in runs:
            run.stopping.set()
        for run in runs:
            self._terminate(run, grace)
        for t in self._threads:
            t.join(timeout=5)
        atexit.unregister(self._kill_all)

    def _log(self, message: str) -> None:
        line = f"{time.strftime('%H:%M:%S')} {message}"
        self.events.append(line)
        with (self.workdir / "kubelet.log").open("a") as f:
            f.write(line + "\n")

    # nodes
    def _register(self, node: NodeSpec) -> None:
        body: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": node.name, "labels": dict(node.labels)},
            "spec": {"taints": [dict(t) for t in node.taints]} if node.taints else {},
        }
        with contextlib.suppress(ApiError):
            self.api.delete(f"/api/v1/nodes/{node.name}")
        self.api.post("/api/v1/nodes", body)
        stamp = now_rfc3339()
        conditions = [
            {
                "type": t,
                "status": "False",
                "reason": f"KubeletHas{r}",
                "lastHeartbeatTime": stamp,
                "lastTransitionTime": stamp,
            }
            for t, r in (
                ("MemoryPressure", "SufficientMemory"),
                ("DiskPressure", "NoDiskPressure"),
                ("PIDPressure", "SufficientPID"),
            )
        ]
        conditions.append(
            {
                "type": "Ready",
                "status": "True",
                "reason": "KubeletReady",
                "message": "local kubelet (tests/support/kubelet.py)",
                "lastHeartbeatTime": stamp,
                "lastTransitionTime": stamp,
            }
        )
        status = {
            "capacity": dict(node.capacity),
            "allocatable": dict(node.capacity),
            "conditions": conditions,
            "addresses": [
                {"type": "InternalIP", "address": HOST_IP},
                {"type": "Hostname", "address": node.name},
            ],
            "nodeInfo": {
                "kubeletVersion": "local",
                "kubeProxyVersion": "",
                "operatingSystem": "linux",
                "architecture": "amd64",
                "containerRuntimeVersion": "local-processes",
                "kernelVersion": os.uname().release,
                "osImage": "",
                "machineID": "",
                "systemUUID": "",
                "bootID": "",
            },
        }
        self.api.merge_patch(f"/api/v1/nodes/{node.name}/status", {"status": status})
        lease = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": node.name, "namespace": "kube-node-lease"},
            "spec": {
                "holderIdentity": node.name,
                "leaseDurationSeconds": LEASE_SECONDS,
                "renewTime": now_rfc3339(micro=True),
            },
        }
        path = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases"
        with contextlib.suppress(ApiError):
            self.api.delete(f"{path}/{node.name}")
        self.api.post(path, lease)
        self._log(f"node {node.name} registered (host cpus {list(node.host_cpus)})")

    def _lease_loop(self) -> None:
        path = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases"
        while not self._stop.wait(RENEW_SECONDS):
            for name in self.nodes:
                try:
                    self.api.merge_patch(f"{path}/{name}", {"spec": {"renewTime": now_rfc3339(micro=True)}})
                except (ApiError, OSError) as exc:
                    self._log(f"lease renewal of {name} failed: {exc}")

    # pods
    def _sync_loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._sync()
            except (ApiError, OSError) as exc:
                self._log(f"sync failed: {exc}")
            except Exception as exc:  # a bug here must show, not silently stop the kubelet
                self._log(f"sync crashed: {type(exc).__name__}: {exc}")
            self._stop.wait(self.sync_interval)

    def _sync(self) -> None:
        seen: set[str] = set()
        for name in self.nodes:
            selector = urllib.parse.quote(f"spec.nodeName={name}")
            for pod in self.api.get(f"/api/v1/pods?fieldSelector={selector}")["items"]:
                meta = pod["metadata"]
                key = f"{meta['namespace']}/{meta['name']}"
                seen.add(key)
                with self._lock:
                    run = self.pods.get(key)
                if run is not None and run.uid != meta["uid"]:
                    self._stop_pod(run)
                    run = None
                if meta.get("deletionTimestamp"):
                    if run is not None and not run.stopping.is_set():
                        grace = float(pod["spec"].get("terminationGracePeriodSeconds", 30))
                        self._stop_pod(run, grace, delete_object=True)
                    elif run is None:
                        self._delete_pod_object(meta)
                    continue
                if run is None:
                    self._start_pod(pod)
        with self._lock:
            gone = [run for key, run in self.pods.items() if key not in seen]
        for run in gone:
            self._stop_pod(run)

    def _allocate_ip(self) -> str:
        while True:
            ip = f"{self.ip_prefix}{self._next_ip}"
            self._next_ip += 1
            if self._next_ip > 254:
                raise RuntimeError("the kubelet ran out of pod addresses")
            with socket.socket() as s:  # skip an address someone else already listens on
                try:
                    s.bind((ip, 0))
                except OSError:
                    continue
            return ip

    def _allocate_cpus(self, node: NodeSpec, count: int) -> tuple[int, ...]:
        """Exclusive cores for a Guaranteed container: ``count`` of the node's free host cores (all
        that are left when the node has fewer cores than it declares)."""
        free = [c for c in node.host_cpus if c not in self._allocated[node.name]]
        chosen = tuple(free[:count]) or node.host_cpus
        if len(chosen) < count:
            self._log(f"node {node.name}: {count} exclusive cores asked, {len(chosen)} available: {chosen}")
        self._allocated[node.name].update(chosen)
        return chosen

    def _shared_cpus(self, node: NodeSpec) -> tuple[int, ...]:
        return tuple(c for c in node.host_cpus if c not in self._allocated[node.name]) or node.host_cpus

    def _services(self, namespace: str) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
        services = self.api.get(f"/api/v1/namespaces/{namespace}/services")["items"]
        try:
            master = self.api.get("/api/v1/namespaces/default/services/kubernetes")
        except ApiError:
            master = None
        return services, master

    def _token_kubeconfig(self, pod: Mapping[str, Any], directory: Path) -> Path | None:
        """The service account token a kubelet would mount, as a kubeconfig (None: not mounted)."""
        spec, meta = pod["spec"], pod["metadata"]
        account = spec.get("serviceAccountName") or "default"
        mount = spec.get("automountServiceAccountToken")
        if mount is None:
            sa = self.api.get(f"/api/v1/namespaces/{meta['namespace']}/serviceaccounts/{account}")
            mount = sa.get("automountServiceAccountToken", True)
        if not mount:
            return None
        request = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {
                "expirationSeconds": 3600,
                "boundObjectRef": {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "name": meta["name"],
                    "uid": meta["uid"],
                },
            },
        }
        token = self.api.post(
            f"/api/v1/namespaces/{meta['namespace']}/serviceaccounts/{account}/token", request
        )["status"]["token"]
        import base64

        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "local",
                    "cluster": {
                        "server": self.api.server,
                        "certificate-authority-data": base64.b64encode(self.api.ca.read_bytes()).decode(),
                    },
                }
            ],
            "users": [{"name": account, "user": {"token": token}}],
            "contexts": [
                {
                    "name": "local",
                    "context": {"cluster": "local", "user": account, "namespace": meta["namespace"]},
                }
            ],
            "current-context": "local",
        }
        path = directory / "serviceaccount.kubeconfig"
        path.write_text(json.dumps(config))
        path.chmod(0o600)
        return path

    def _start_pod(self, pod: dict[str, Any]) -> None:
        meta, spec = pod["metadata"], pod["spec"]
        node = self.nodes[spec["nodeName"]]
        key = f"{meta['namespace']}/{meta['name']}"
        with self._lock:
            ip = self._allocate_ip()
            directory = self.workdir / f"{meta['namespace']}_{meta['name']}"
            directory.mkdir(parents=True, exist_ok=True)
            run = PodRun(
                meta["namespace"],
                meta["name"],
                meta["uid"],
                node.name,
                ip,
                pod,
                directory,
                started_rfc=now_rfc3339(),
            )
            ctx = PodContext(pod, ip, HOST_IP)
            services, master = self._services(meta["namespace"])
            kubeconfig = self._token_kubeconfig(pod, directory)
            if spec.get("initContainers"):
                raise RuntimeError(f"pod {key}: init containers are not supported by the local kubelet")
            for container in spec["containers"]:
                env = {
                    "PATH": IMAGE_PATH,
                    "HOME": os.environ.get("HOME", "/root"),
                    "LANG": "C.UTF-8",
                    "HOSTNAME": meta["name"],
                }
                env |= container_env(ctx, container, services, master)
                subs: list[Substitution] = []
                if kubeconfig is not None:
                    env["KUBECONFIG"] = str(kubeconfig)
                    subs.append(
                        Substitution(
                            "service-account-token",
                            "/var/run/secrets/kubernetes.io/serviceaccount",
                            str(kubeconfig),
                        )
                    )
                argv, more = command_line(container, env, self.interpreters, ip)
                count = exclusive_cpus(pod, container) if self.cpu_manager_policy == "static" else 0
                cpus = self._allocate_cpus(node, count) if count else self._shared_cpus(node)
                run.containers.append(
                    ContainerRun(
                        container["name"],
                        container,
                        argv,
                        env,
                        cpus,
                        bool(count),
                        directory / f"{container['name']}.log",
                        subs + more,
                    )
                )
            self.pods[key] = run
        self._log(
            f"pod {key} on {node.name}: ip {ip}, "
            + ", ".join(
                f"{c.name} cpus {list(c.cpus)}{' exclusive' if c.exclusive else ''}" for c in run.containers
            )
        )
        self._publish(run)
        for c in run.containers:
            t = threading.Thread(
                target=self._supervise, args=(run, c), name=f"kubelet-{key}-{c.name}", daemon=True
            )
            t.start()
            run.threads.append(t)

    # containers
    def _launch(self, run: PodRun, c: ContainerRun) -> None:
        log = c.log.open("ab")
        log.write(f"\n=== {now_rfc3339()} start #{c.restarts}: {' '.join(c.argv)}\n".encode())
        log.flush()
        cpus = ",".join(str(x) for x in c.cpus)
        c.proc = subprocess.Popen(
            ["taskset", "-c", cpus, *c.argv],
            env=c.env,
            cwd=run.directory,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        c.started_at = time.monotonic()
        c.started_rfc = now_rfc3339()
        c.ready = False
        c.started = probe(c.spec, "startupProbe") is None
        c.waiting_reason = ""
        self._log(f"pod {run.key}: container {c.name} started, pid {c.proc.pid}")

    def _check(self, run: PodRun, p: Probe) -> bool:
        host = p.host or run.ip
        try:
            if p.kind == "tcpSocket":
                with socket.create_connection((host, p.port), timeout=p.timeout):
                    return True
            conn_cls = http.client.HTTPSConnection if p.scheme == "HTTPS" else http.client.HTTPConnection
            conn = conn_cls(host, p.port, timeout=p.timeout)
            try:
                conn.request("GET", p.path, headers={"User-Agent": "kube-probe/local"})
                return 200 <= conn.getresponse().status < 400
            finally:
                conn.close()
        except (OSError, http.client.HTTPException):
            return False

    def _supervise(self, run: PodRun, c: ContainerRun) -> None:
        backoff = 0.0
        probes = {w: probe(c.spec, w) for w in ("startupProbe", "livenessProbe", "readinessProbe")}
        counts: dict[str, list[int]] = {}
        due: dict[str, float] = {}
        while not run.stopping.is_set():
            if c.proc is None or c.proc.poll() is not None:
                if c.proc is not None:  # exited: as restartPolicy Always
                    c.last_exit = c.proc.returncode
                    c.ready = False
                    c.waiting_reason = "CrashLoopBackOff" if backoff else ""
                    ran = time.monotonic() - (c.started_at or 0)
                    self._log(
                        f"pod {run.key}: container {c.name} exited with {c.last_exit} after {ran:.0f} s; "
                        f"restart in {backoff:.0f} s"
                    )
                    self._publish(run)
                    if ran > 600:
                        backoff = 0.0
                    if run.stopping.wait(backoff):
                        return
                    backoff = min(BACKOFF_MAX, backoff * 2 or BACKOFF_START)
                    c.restarts += 1
                self._launch(run, c)
                self._publish(run)
                assert c.started_at is not None
                counts = {w: [0, 0] for w in probes}  # consecutive successes, failures
                due = {w: c.started_at + (p.initial_delay if p else 0) for w, p in probes.items()}
            t = time.monotonic()
            for which, p in probes.items():
                if p is None or t < due[which]:
                    continue
                if which != "startupProbe" and not c.started:
                    continue
                if which == "startupProbe" and c.started:
                    continue
                due[which] = t + p.period
                ok = self._check(run, p)
                if run.stopping.is_set() or c.proc is None or c.proc.poll() is not None:
                    break
                succ, fail = counts[which]
                counts[which] = [succ + 1, 0] if ok else [0, fail + 1]
                succ, fail = counts[which]
                if which == "startupProbe" and ok:
                    c.started = True
                    self._publish(run)
                elif which in ("startupProbe", "livenessProbe") and fail >= p.failure_threshold:
                    self._log(f"pod {run.key}: container {c.name} failed its {which}: restarting")
                    self._kill_group(c, signal.SIGKILL)
                elif which == "readinessProbe":
                    if ok and not c.ready and succ >= p.success_threshold:
                        c.ready = True
                        c.ready_times.append(time.monotonic())
                        self._log(
                            f"pod {run.key}: container {c.name} ready after "
                            f"{time.monotonic() - (c.started_at or 0):.1f} s"
                        )
                        self._publish(run)
                    elif not ok and c.ready and fail >= p.failure_threshold:
                        c.ready = False
                        self._log(f"pod {run.key}: container {c.name} not ready")
                        self._publish(run)
            if probes["readinessProbe"] is None and c.started and not c.ready:
                c.ready = True
                c.ready_times.append(time.monotonic())
                self._publish(run)
            run.stopping.wait(0.2)

    @staticmethod
    def _kill_group(c: ContainerRun, sig: int) -> None:
        if c.proc is not None and c.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(c.proc.pid, sig)

    def _terminate(self, run: PodRun, grace: float) -> None:
        for c in run.containers:
            self._kill_group(c, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for c in run.containers:
            if c.proc is None:
                continue
            try:
                c.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self._kill_group(c, signal.SIGKILL)
                c.proc.wait(timeout=30)
            # The container's process group may outlive its leader (engine worker processes).
            with contextlib.suppress(ProcessLookupError):
                os.killpg(c.proc.pid, signal.SIGKILL)
        for t in run.threads:
            t.join(timeout=5)

    def _stop_pod(self, run: PodRun, grace: float = 10, delete_object: bool = False) -> None:
        run.stopping.set()

        def stop() -> None:
            self._terminate(run, grace)
            with self._lock:
                node = self.nodes[run.node]
                for c in run.containers:
                    if c.exclusive:
                        self._allocated[node.name].difference_update(c.cpus)
                self.pods.pop(run.key, None)
            self._log(f"pod {run.key} stopped")
            if delete_object:
                self._delete_pod_object(run.pod["metadata"])

        threading.Thread(target=stop, name=f"kubelet-stop-{run.key}", daemon=True).start()

    def _delete_pod_object(self, meta: Mapping[str, Any]) -> None:
        body = {
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "gracePeriodSeconds": 0,
            "preconditions": {"uid": meta["uid"]},
        }
        with contextlib.suppress(ApiError):
            self.api.delete(f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}", body)

    def _kill_all(self) -> None:
        with self._lock:
            runs = list(self.pods.values())
        for run in runs:
            run.stopping.set()
            for c in run.containers:
                self._kill_group(c, signal.SIGKILL)

    # status
    def _publish(self, run: PodRun) -> None:
        """Write the pod's status as the kubelet's status manager would."""
        with self._status_lock:
            if run.stopping.is_set():
                return
            stamp = now_rfc3339()
            all_ready = all(c.ready for c in run.containers)
            statuses = []
            for c in run.containers:
                alive = c.proc is not None and c.proc.poll() is None
                if alive:
                    state: dict[str, Any] = {"running": {"startedAt": c.started_rfc}}
                elif c.last_exit is not None:
                    state = {"waiting": {"reason": c.waiting_reason or "ContainerCreating"}}
                else:
                    state = {"waiting": {"reason": "ContainerCreating"}}
                status: dict[str, Any] = {
                    "name": c.name,
                    "ready": c.ready,
                    "started": c.started and alive,
                    "restartCount": c.restarts,
                    "image": c.spec.get("image", ""),
                    "imageID": "",
                    "containerID": f"local://{c.proc.pid}" if c.proc else "",
                    "state": state,
                }
                if c.last_exit is not None:
                    status["lastState"] = {"terminated": {"exitCode": c.last_exit, "reason": "Error"}}
                statuses.append(status)
            try:
                current = self.api.get(f"/api/v1/namespaces/{run.namespace}/pods/{run.name}")
            except ApiError:
                return
            old = {c["type"]: c for c in (current.get("status") or {}).get("conditions") or []}

            def cond(kind: str, ok: bool) -> dict[str, Any]:
                value = "True" if ok else "False"
                prev = old.get(kind)
                since = prev["lastTransitionTime"] if prev and prev.get("status") == value else stamp
                return {"type": kind, "status": value, "lastProbeTime": None, "lastTransitionTime": since}

            conditions = [
                cond("PodReadyToStartContainers", True),
                cond("Initialized", True),
                cond("ContainersReady", all_ready),
                cond("Ready", all_ready),
            ]
            if "PodScheduled" in old:
                conditions.append(old["PodScheduled"])
            body = {
                "status": {
                    "phase": "Running",
                    "hostIP": HOST_IP,
                    "hostIPs": [{"ip": HOST_IP}],
                    "podIP": run.ip,
                    "podIPs": [{"ip": run.ip}],
                    "startTime": run.started_rfc,
                    "conditions": conditions,
                    "containerStatuses": statuses,
                }
            }
            try:
                self.api.merge_patch(f"/api/v1/namespaces/{run.namespace}/pods/{run.name}/status", body)
            except ApiError as exc:
                self._log(f"status of {run.key} not written: {exc}")

    # what tests use
    def find(self, namespace: str, labels: Mapping[str, str]) -> list[PodRun]:
        with self._lock:
            return [
                r
                for r in self.pods.values()
                if r.namespace == namespace and all(r.labels.get(k) == v for k, v in labels.items())
            ]

    def kill(self, run: PodRun, sig: int = signal.SIGKILL, container: str | None = None) -> None:
        """Signal a container's whole process group (a crash, as far as the kubelet can tell)."""
        for c in run.containers:
            if container is None or c.name == container:
                self._kill_group(c, sig)

    @property
    def substitutions(self) -> list[tuple[str, str, Substitution]]:
        with self._lock:
            return [
                (r.key, c.name, s) for r in self.pods.values() for c in r.containers for s in c.substitutions
            ]

    def log_tail(self, runs: Iterable[PodRun], lines: int = 40) -> str:
        out = []
        for run in runs:
            for c in run.containers:
                text = c.log.read_text(errors="replace").splitlines() if c.log.exists() else []
                out.append(f"--- {run.key}/{c.name} ({c.log})\n" + "\n".join(text[-lines:]))
        return "\n".join(out)
