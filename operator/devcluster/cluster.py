"""Start, check and stop the local control plane: etcd, kube-apiserver, kube-controller-manager,
kube-scheduler and KWOK, on free loopback ports, with all state in one folder.

State folder (default ``~/.local/state/hetsched/cluster``, or ``$HETSCHED_CLUSTER_DIR``)::

    cluster.json        ports, binaries folder, service range (what ``status``/``down`` read)
    kubeconfig          admin (system:masters) kubeconfig, certificates embedded
    kubeconfigs/        one per component, each with its own client certificate
    kube-scheduler.yaml the scheduler's KubeSchedulerConfiguration (GPU bin packing)
    pki/                CA, apiserver serving cert, client certs, service-account keys
    pids/<name>.json    pid, executable and start time of each process we started
    logs/<name>.log     stdout+stderr of each process
    etcd/               etcd data
    kwok-home/          KWOK's $HOME (so ~/.kwok/kwok.yaml is not read)
    kube-cache/, helm/  kubectl discovery cache and Helm homes for this cluster (see ``env``)

The processes run in their own sessions (they outlive ``hetsched cluster up``); ``down`` stops
only a PID whose executable and start time still match its PID file, so a recycled PID is never
signalled. Linux only (``/proc``).
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import fcntl
import functools
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml
from hetsched.operator.devcluster import build, certs
from hetsched.operator.devcluster.pools import KWOK_ANNOTATION, PoolFile, node_list, node_names
from hetsched.scheduler.pools import POOL_LABEL

SERVICE_CIDR = "10.96.0.0/16"
SERVICE_IP = "10.96.0.1"  # first address of SERVICE_CIDR: the `kubernetes` Service
POD_CIDR = "10.244.0.1/16"  # KWOK hands out fake pod IPs from here
SA_ISSUER = "https://kubernetes.default.svc.cluster.local"
KWOK_NODE_SELECTOR = f"{KWOK_ANNOTATION}=fake"

# Start order; stopped in reverse phases (clients first, so the apiserver has no watches to drain).
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
STOP_PHASES = (("kwok", "kube-scheduler", "kube-controller-manager"), ("kube-apiserver",), ("etcd",))

T = TypeVar("T")
Log = Callable[[str], None]


class ClusterError(RuntimeError):
    """The cluster could not be brought up, stopped or reached; the message says what to do."""


class ComponentExited(ClusterError):
    """A component died while we waited for it: no point waiting any longer."""


def default_state_dir() -> Path:
    """``$HETSCHED_CLUSTER_DIR``, else ``$XDG_STATE_HOME/hetsched/cluster`` (~/.local/state/...)."""
    if env := os.environ.get("HETSCHED_CLUSTER_DIR"):
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_STATE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".local" / "state") / "hetsched" / "cluster"


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def wait_for(
    check: Callable[[], T | None],
    timeout: float,
    what: str,
    interval: float = 0.25,
) -> T:
    """Poll ``check`` until it returns something other than None/False; ClusterError on timeout."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            result = check()
            if result is not None and result is not False:
                return result
        except ComponentExited:
            raise
        except Exception as exc:  # any failure (refused, 503, not found) just means "not yet"
            last_error = exc
        if time.monotonic() > deadline:
            detail = f" (last error: {last_error})" if last_error else ""
            raise ClusterError(f"timed out after {timeout:.0f}s waiting for {what}{detail}")
        time.sleep(interval)


# Scoring of the NodeResourcesFit plugin: MostAllocated, nvidia.com/gpu weighted far above CPU and
# memory. The default (LeastAllocated on CPU and memory only) spreads single-GPU replicas over the
# nodes of a pool, so that a replica needing a whole node's GPUs finds no node with enough free
# ones although the pool has them; packing keeps whole nodes free.
BIN_PACKING_RESOURCES = (("nvidia.com/gpu", 10), ("cpu", 1), ("memory", 1))


def scheduler_configuration(kubeconfig: Path | str) -> dict[str, Any]:
    """``KubeSchedulerConfiguration`` (``kubescheduler.config.k8s.io/v1``) of the local cluster:
    the default profile with GPU bin packing, no leader election.

    Two plugin settings: NodeResourcesFit scores MostAllocated (GPUs weighted 10, CPU and memory
    1), and PodTopologySpread gets no *system default* constraints (``defaultingType: List``
    without ``defaultConstraints``). Those defaults (spread the pods of one Service/ReplicaSet over
    hosts, ``ScheduleAnyway``, plugin weight 2) outscore NodeResourcesFit (weight 1): with them the
    four single-GPU replicas of one Deployment still land 2 + 2 on two 4-GPU nodes. Pods that ask
    for spreading with their own ``topologySpreadConstraints`` still get it.
    """
    return {
        "apiVersion": "kubescheduler.config.k8s.io/v1",
        "kind": "KubeSchedulerConfiguration",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "leaderElection": {"leaderElect": False},
        "profiles": [
            {
                "schedulerName": "default-scheduler",
                "pluginConfig": [
                    {
                        "name": "NodeResourcesFit",
                        "args": {
                            "scoringStrategy": {
                                "type": "MostAllocated",
                                "resources": [
                                    {"name": name, "weight": weight} for name, weight in BIN_PACKING_RESOURCES
                                ],
                            }
                        },
                    },
                    {"name": "PodTopologySpread", "args": {"defaultingType": "List"}},
                ],
            }
        ],
    }


# -- processes -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProcessRecord:
    """What we wrote when we started a process: enough to recognise it later."""

    name: str
    pid: int
    exe: str
    start_time: int  # clock ticks since boot (/proc/<pid>/stat field 22)
    port: int

    def is_alive(self) -> bool:
        """True if this PID is still the very process we started (not a recycled PID, not a zombie)."""
        stat = _proc_stat(self.pid)
        if stat is None or stat[0] in ("Z", "X"):
            return False
        if int(stat[19]) != self.start_time:
            return False
        return _proc_exe(self.pid) in (self.exe, None)


def _proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (state first), or None if gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name is in parentheses and may itself contain spaces or ')'.
    return text[text.rindex(")") + 2 :].split()


def _proc_exe(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/exe").removesuffix(" (deleted)")
    except PermissionError:
        return None  # can't tell; start time already matched
    except OSError:
        return ""


def _rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _reap(pid: int) -> None:
    """Collect the exit status if the process is our child (e.g. started from pytest)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def _spawn(argv: Sequence[str], log_path: Path, env: dict[str, str]) -> int:
    """Start a process in its own session, output appended to ``log_path``; return its PID.

    posix_spawn rather than subprocess.Popen: no Popen object outlives this call, so there is no
    "subprocess still running" ResourceWarning (pytest runs with -W error) and nothing to reap
    here; ``down`` reaps it if it is our child.
    """
    actions = [
        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, str(log_path), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644),
        (os.POSIX_SPAWN_DUP2, 1, 2),
    ]
    return os.posix_spawn(argv[0], list(argv), env, file_actions=actions, setsid=True)


def _free_ports(count: int) -> list[int]:
    """Distinct free loopback ports (held open together so the kernel cannot repeat one)."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def http_get(url: str, context: ssl.SSLContext | None = None, timeout: float = 5) -> tuple[int, bytes]:
    """GET ``url``; (status, body) for any HTTP status, OSError only when nothing answered.

    An HTTPError carries an open response: closing it here avoids an "unclosed socket"
    ResourceWarning (an error under pytest -W error).
    """
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, context=context, timeout=timeout) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.read()


def _log_tail(path: Path, lines: int = 25) -> str:
    try:
        return "".join(path.read_text(errors="replace").splitlines(keepends=True)[-lines:])
    except OSError:
        return "(no log)\n"


# -- configuration ----------------------------------------------------------------------------


@dataclass
class Ports:
    etcd: int
    etcd_peer: int
    apiserver: int
    controller_manager: int
    scheduler: int
    kwok: int

    def of(self, component: str) -> int:
        return {
            "etcd": self.etcd,
            "kube-apiserver": self.apiserver,
            "kube-controller-manager": self.controller_manager,
            "kube-scheduler": self.scheduler,
            "kwok": self.kwok,
        }[component]


@dataclass
class ClusterConfig:
    """Written to ``cluster.json`` before anything starts, so ``down`` can always clean up."""

    bin_dir: str
    ports: Ports
    service_cidr: str = SERVICE_CIDR
    node_grace_period: float | None = None  # controller-manager's default (50 s) when None
    created_at: str = field(default_factory=lambda: dt.datetime.now(dt.UTC).isoformat(timespec="seconds"))

    @classmethod
    def from_json(cls, text: str) -> ClusterConfig:
        data = json.loads(text)
        return cls(
            bin_dir=data["bin_dir"],
            ports=Ports(**data["ports"]),
            service_cidr=data.get("service_cidr", SERVICE_CIDR),
            node_grace_period=data.get("node_grace_period"),
            created_at=data.get("created_at", ""),
        )


@dataclass(frozen=True)
class ComponentStatus:
    name: str
    running: bool
    pid: int | None
    port: int | None
    rss_mib: float | None = None


@dataclass(frozen=True)
class NodeStatus:
    name: str
    pool: str | None
    ready: bool


@dataclass
class ClusterStatus:
    state_dir: str
    exists: bool
    components: list[ComponentStatus]
    server: str | None = None
    kubeconfig: str | None = None
    nodes: list[NodeStatus] = field(default_factory=list)
    api_error: str | None = None

    @property
    def all_running(self) -> bool:
        return bool(self.components) and all(c.running for c in self.components)

    def to_json(self) -> dict[str, Any]:
        return asdict(self) | {"all_running": self.all_running}


# -- the cluster ------------------------------------------------------------------------------


class Cluster:
    """One local cluster, identified by its state folder. Cheap to construct; touches nothing."""

    def __init__(self, state_dir: Path | str | None = None, log: Log = _stderr) -> None:
        self.state_dir = Path(state_dir).expanduser().resolve() if state_dir else default_state_dir()
        self.log = log

    # paths
    @property
    def config_path(self) -> Path:
        return self.state_dir / "cluster.json"

    @property
    def kubeconfig(self) -> Path:
        return self.state_dir / "kubeconfig"

    @property
    def pki(self) -> certs.Pki:
        return certs.Pki(self.state_dir / "pki")

    def _pid_path(self, name: str) -> Path:
        return self.state_dir / "pids" / f"{name}.json"

    def log_path(self, name: str) -> Path:
        return self.state_dir / "logs" / f"{name}.log"

    def _component_kubeconfig(self, name: str) -> Path:
        return self.state_dir / "kubeconfigs" / f"{name}.kubeconfig"

    def load_config(self) -> ClusterConfig | None:
        try:
            return ClusterConfig.from_json(self.config_path.read_text())
        except FileNotFoundError:
            return None

    def _config(self) -> ClusterConfig:
        config = self.load_config()
        if config is None:
            raise ClusterError(f"no cluster in {self.state_dir}: run `hetsched cluster up` first")
        return config

    @property
    def bin_dir(self) -> Path:
        return Path(self._config().bin_dir)

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self._config().ports.apiserver}"

    def records(self) -> dict[str, ProcessRecord]:
        out = {}
        for name in COMPONENTS:
            with contextlib.suppress(FileNotFoundError):
                out[name] = ProcessRecord(**json.loads(self._pid_path(name).read_text()))
        return out

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        """Serialise up/down/nodes on one state folder (the lock file sits beside it)."""
        self.state_dir.parent.mkdir(parents=True, exist_ok=True)
        lock_path = self.state_dir.parent / f".{self.state_dir.name}.lock"
        with lock_path.open("a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self.log(f"waiting for another hetsched command on {self.state_dir} ...")
                fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    # client side: environment, kubectl, API
    def env(self) -> dict[str, str]:
        """Environment for kubectl/helm against this cluster (binaries first on PATH)."""
        return dict(os.environ) | {
            "KUBECONFIG": str(self.kubeconfig),
            "PATH": f"{self.bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
            # Discovery caches are keyed by host:port, and ports are reused across clusters.
            "KUBECACHEDIR": str(self.state_dir / "kube-cache"),
            "HELM_CACHE_HOME": str(self.state_dir / "helm" / "cache"),
            "HELM_CONFIG_HOME": str(self.state_dir / "helm" / "config"),
            "HELM_DATA_HOME": str(self.state_dir / "helm" / "data"),
        }

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """Run the pinned kubectl against this cluster; raise ClusterError on failure if ``check``."""
        argv = [str(self.bin_dir / "kubectl"), "--kubeconfig", str(self.kubeconfig), *args]
        result = subprocess.run(
            argv, input=input, capture_output=True, text=True, timeout=timeout, env=self.env(), check=False
        )
        if check and result.returncode != 0:
            raise ClusterError(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
        return result

    def _ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.pki.ca_cert))
        context.load_cert_chain(self.pki.client_cert("admin"), self.pki.client_key("admin"))
        return context

    def api_get(self, path: str, timeout: float = 5) -> Any:
        """GET a JSON path from the apiserver as admin."""
        status, body = http_get(self.server + path, self._ssl_context(), timeout)
        if status != 200:
            raise ClusterError(f"GET {path}: HTTP {status}: {body[:300].decode(errors='replace')}")
        return json.loads(body)

    def nodes(self) -> list[NodeStatus]:
        """KWOK nodes and whether each is Ready."""
        items = self.api_get("/api/v1/nodes?labelSelector=type%3Dkwok")["items"]
        out = []
        for item in items:
            conditions = {c["type"]: c["status"] for c in item.get("status", {}).get("conditions", [])}
            labels = item["metadata"].get("labels", {})
            out.append(
                NodeStatus(
                    item["metadata"]["name"], labels.get(POOL_LABEL), conditions.get("Ready") == "True"
                )
            )
        return sorted(out, key=lambda n: n.name)

    # status
    def status(self, query_api: bool = True) -> ClusterStatus:
        config = self.load_config()
        records = self.records()
        components = []
        for name in COMPONENTS:
            record = records.get(name)
            alive = record is not None and record.is_alive()
            if record is not None and not alive:
                _reap(record.pid)
            components.append(
                ComponentStatus(
                    name=name,
                    running=alive,
                    pid=record.pid if record else None,
                    port=config.ports.of(name) if config else None,
                    rss_mib=_rss_mib(record.pid) if record and alive else None,
                )
            )
        result = ClusterStatus(str(self.state_dir), config is not None, components if config else [])
        if config is None:
            return result
        result.server = self.server
        result.kubeconfig = str(self.kubeconfig)
        if query_api and result.components[1].running:
            try:
                result.nodes = self.nodes()
            except (OSError, ClusterError, ValueError, KeyError) as exc:
                result.api_error = str(exc)
        return result

    # up
    def up(
        self,
        pools: PoolFile | None = None,
        *,
        bin_dir: Path | None = None,
        timeout: float = 120,
        node_grace_period: float | None = None,
    ) -> ClusterStatus:
        """Bring the cluster up (or find it up) and create the pools' nodes; idempotent.

        ``node_grace_period``: seconds without a heartbeat before a node goes NotReady (the
        controller-manager's default is 50 s; KWOK renews leases every 10 s, so keep it >= 20).

        Already running: only applies ``pools``. Partly running: ClusterError (run ``down``).
        Left over with nothing running (e.g. after a reboot): removed and started afresh.
        """
        started = time.monotonic()
        with self._lock():
            existing = self.status(query_api=False)
            if existing.exists:
                running = [c.name for c in existing.components if c.running]
                if existing.all_running:
                    self.log(f"cluster already up in {self.state_dir}")
                    if pools is not None:
                        self._apply_nodes(pools, timeout)
                    return self.status()
                if running:
                    stopped = [c.name for c in existing.components if not c.running]
                    raise ClusterError(
                        f"cluster in {self.state_dir} is partly running ({', '.join(running)} up; "
                        f"{', '.join(stopped)} not): run `hetsched cluster down` first "
                        f"(logs in {self.state_dir / 'logs'})"
                    )
                self.log(f"removing a stopped cluster's leftover state in {self.state_dir}")
                shutil.rmtree(self.state_dir)
            elif self.state_dir.exists() and any(self.state_dir.iterdir()):
                raise ClusterError(f"{self.state_dir} exists and is not a hetsched cluster folder")

            bins = bin_dir or build.ensure_binaries(progress=self.log)
            try:
                self._start(bins, timeout, node_grace_period)
                if pools is not None:
                    self._apply_nodes(pools, timeout)
            except BaseException:
                self.log(
                    f"bringing the cluster up failed; stopping what started (logs kept in {self.state_dir})"
                )
                with contextlib.suppress(ClusterError):
                    self._stop(timeout=10)
                raise
        self.log(f"cluster up in {time.monotonic() - started:.1f}s")
        return self.status()

    def _start(self, bins: Path, timeout: float, node_grace_period: float | None) -> None:
        phase_start = time.monotonic()
        for sub in ("pids", "logs", "kubeconfigs", "etcd", "kwok-home"):
            (self.state_dir / sub).mkdir(parents=True, exist_ok=True)
        self.state_dir.chmod(0o700)  # holds private keys
        (self.state_dir / "etcd").chmod(0o700)  # etcd warns about anything wider
        ports = Ports(*_free_ports(6))
        config = ClusterConfig(bin_dir=str(bins), ports=ports, node_grace_period=node_grace_period)
        self.config_path.write_text(json.dumps(asdict(config), indent=2) + "\n")
        certs.write_pki(self.state_dir / "pki", SERVICE_IP)
        self._write_kubeconfig(self.kubeconfig, "admin")
        for name in ("kube-controller-manager", "kube-scheduler", "kwok"):
            self._write_kubeconfig(self._component_kubeconfig(name), name)
        self.log(f"  certificates and kubeconfigs: {time.monotonic() - phase_start:.1f}s")

        for group in (("etcd",), ("kube-apiserver",), ("kube-controller-manager", "kube-scheduler", "kwok")):
            for name in group:
                self._launch_component(name, bins, config)
            for name in group:
                self._wait_healthy(name, self._health_check(name, ports), timeout)
        # Pods can only be created once the controller-manager has made the `default` ServiceAccount.
        self._wait_healthy(
            "kube-controller-manager",
            lambda: self.api_get("/api/v1/namespaces/default/serviceaccounts/default"),
            timeout,
            what="the default ServiceAccount",
        )
        self.log(f"  control plane ready: {time.monotonic() - phase_start:.1f}s")

    def _launch_component(self, name: str, bins: Path, config: ClusterConfig) -> None:
        pki, ports = self.pki, config.ports
        if name == "etcd":
            self._launch(name, bins, self._etcd_args(ports))
        elif name == "kube-apiserver":
            self._launch(name, bins, self._apiserver_args(ports, pki))
        elif name == "kube-controller-manager":
            self._launch(name, bins, self._controller_manager_args(config, pki))
        elif name == "kube-scheduler":
            self._write_scheduler_config()
            self._launch(name, bins, self._scheduler_args(ports))
        elif name == "kwok":
            # HOME inside the state folder: KWOK would otherwise also read ~/.kwok/kwok.yaml.
            self._launch(name, bins, self._kwok_args(ports), env={"HOME": str(self.state_dir / "kwok-home")})
        else:
            raise ValueError(f"unknown component {name!r}")

    def _health_check(self, name: str, ports: Ports) -> Callable[[], bool]:
        if name == "etcd":
            return functools.partial(self._http_ok, f"http://127.0.0.1:{ports.etcd}/health")
        if name == "kube-apiserver":
            return self._apiserver_ready
        if name == "kwok":
            return functools.partial(self._http_ok, f"http://127.0.0.1:{ports.kwok}/healthz")
        # The controller-manager and scheduler serve /healthz over TLS with a self-signed cert
        # they generate at start; nothing to verify it against.
        insecure = ssl.create_default_context()
        insecure.check_hostname = False
        insecure.verify_mode = ssl.CERT_NONE
        port = ports.of(name)
        return functools.partial(self._http_ok, f"https://127.0.0.1:{port}/healthz", insecure)

    def _launch(self, name: str, bins: Path, args: list[str], env: dict[str, str] | None = None) -> None:
        with contextlib.suppress(FileNotFoundError):  # a restart: collect the old one if it is our child
            _reap(ProcessRecord(**json.loads(self._pid_path(name).read_text())).pid)
        exe = os.path.realpath(bins / name)  # what /proc/<pid>/exe will show
        log_path = self.log_path(name)
        log_path.write_text(f"# {exe} {' '.join(args)}\n")
        pid = _spawn([exe, *args], log_path, dict(os.environ) | (env or {}))
        stat = _proc_stat(pid)
        start_time = int(stat[19]) if stat else 0
        record = ProcessRecord(
            name=name, pid=pid, exe=exe, start_time=start_time, port=self._config().ports.of(name)
        )
        tmp = self._pid_path(name).with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(record)) + "\n")
        os.replace(tmp, self._pid_path(name))

    def _wait_healthy(
        self, name: str, check: Callable[[], Any], timeout: float, what: str | None = None
    ) -> None:
        start = time.monotonic()
        record = self.records()[name]
        log = self.log_path(name)

        def probe() -> Any:
            if not record.is_alive():
                _reap(record.pid)
                raise ComponentExited(f"{name} exited during start-up; log {log}:\n{_log_tail(log)}")
            return check()

        try:
            wait_for(probe, timeout, what or f"{name} to be healthy")
        except ComponentExited:
            raise
        except ClusterError as exc:
            raise ClusterError(f"{exc}; log {log}:\n{_log_tail(log)}") from None
        self.log(f"  {what or name}: ready after {time.monotonic() - start:.1f}s")

    @staticmethod
    def _http_ok(url: str, context: ssl.SSLContext | None = None) -> bool:
        return http_get(url, context, timeout=2)[0] == 200

    def _apiserver_ready(self) -> bool:
        return http_get(f"{self.server}/readyz", self._ssl_context(), timeout=2)[0] == 200

    # command lines
    def _etcd_args(self, ports: Ports) -> list[str]:
        peer = f"http://127.0.0.1:{ports.etcd_peer}"
        client = f"http://127.0.0.1:{ports.etcd}"
        return [
            "--name=hetsched",
            f"--data-dir={self.state_dir / 'etcd'}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            # Without these etcd binds its default peer port on every interface.
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=hetsched={peer}",
            # Throwaway data: skipping fsync makes every write (and so the whole demo) faster.
            "--unsafe-no-fsync=true",
            "--log-level=warn",
        ]

    def _apiserver_args(self, ports: Ports, pki: certs.Pki) -> list[str]:
        return [
            f"--etcd-servers=http://127.0.0.1:{ports.etcd}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={ports.apiserver}",
            f"--tls-cert-file={pki.apiserver_cert}",
            f"--tls-private-key-file={pki.apiserver_key}",
            f"--client-ca-file={pki.ca_cert}",
            f"--service-account-key-file={pki.service_account_pub}",
            f"--service-account-signing-key-file={pki.service_account_key}",
            f"--service-account-issuer={SA_ISSUER}",
            "--authorization-mode=Node,RBAC",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--allow-privileged=true",
            f"--cert-dir={self.state_dir / 'pki'}",
            # The `kubernetes` Service cannot point at a loopback address (endpoint validation
            # rejects it every 10 s); nothing runs in pods here, so leave it without endpoints.
            "--endpoint-reconciler-type=none",
            # Aggregation layer / request-header authentication (see certs.write_pki).
            f"--requestheader-client-ca-file={pki.front_proxy_ca_cert}",
            f"--requestheader-allowed-names={certs.FRONT_PROXY_CLIENT}",
            "--requestheader-username-headers=X-Remote-User",
            "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            f"--proxy-client-cert-file={pki.front_proxy_client_cert}",
            f"--proxy-client-key-file={pki.front_proxy_client_key}",
        ]

    def _delegated_auth_args(self, name: str) -> list[str]:
        kubeconfig = self._component_kubeconfig(name)
        return [
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
        ]

    def _controller_manager_args(self, config: ClusterConfig, pki: certs.Pki) -> list[str]:
        # All default controllers, node-lifecycle included: KWOK nodes that stop heartbeating go
        # NotReady after --node-monitor-grace-period and their pods are evicted.
        ports = config.ports
        grace = []
        if config.node_grace_period is not None:
            grace = [f"--node-monitor-grace-period={config.node_grace_period:g}s"]
        return [
            *grace,
            *self._delegated_auth_args("kube-controller-manager"),
            f"--secure-port={ports.controller_manager}",
            f"--service-account-private-key-file={pki.service_account_key}",
            f"--root-ca-file={pki.ca_cert}",
            "--use-service-account-credentials=true",
            f"--cluster-signing-cert-file={pki.ca_cert}",
            f"--cluster-signing-key-file={pki.ca_key}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
        ]

    @property
    def scheduler_config_path(self) -> Path:
        return self.state_dir / "kube-scheduler.yaml"

    def _write_scheduler_config(self) -> None:
        """The kube-scheduler's ``KubeSchedulerConfiguration``: GPU bin packing (see
        :func:`scheduler_configuration`). Written at every start, so a restart picks up changes."""
        document = scheduler_configuration(self._component_kubeconfig("kube-scheduler"))
        self.scheduler_config_path.write_text(yaml.safe_dump(document, sort_keys=False))

    def _scheduler_args(self, ports: Ports) -> list[str]:
        # With --config the kubeconfig and leader election come from the file (clientConnection,
        # leaderElection); --kubeconfig would be ignored. --leader-elect=false is honoured too.
        args = [a for a in self._delegated_auth_args("kube-scheduler") if not a.startswith("--kubeconfig=")]
        return [f"--config={self.scheduler_config_path}", *args, f"--secure-port={ports.scheduler}"]

    def _kwok_args(self, ports: Ports) -> list[str]:
        return [
            f"--kubeconfig={self._component_kubeconfig('kwok')}",
            "--manage-all-nodes=false",
            f"--manage-nodes-with-annotation-selector={KWOK_NODE_SELECTOR}",
            f"--cidr={POD_CIDR}",
            "--node-ip=10.0.0.1",
            f"--server-address=127.0.0.1:{ports.kwok}",
            # Heartbeat by Lease renewed every 10 s, like a kubelet. Without it KWOK falls back to
            # status updates every 20-45 s, too close to the controller-manager's 50 s grace period.
            "--node-lease-duration-seconds=40",
        ]

    def _write_kubeconfig(self, path: Path, client: str) -> None:
        pki = self.pki

        def b64(p: Path) -> str:
            return base64.b64encode(p.read_bytes()).decode()

        user = "admin" if client == "admin" else client
        document = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "hetsched-local",
                    "cluster": {"server": self.server, "certificate-authority-data": b64(pki.ca_cert)},
                }
            ],
            "users": [
                {
                    "name": user,
                    "user": {
                        "client-certificate-data": b64(pki.client_cert(client)),
                        "client-key-data": b64(pki.client_key(client)),
                    },
                }
            ],
            "contexts": [{"name": "hetsched-local", "context": {"cluster": "hetsched-local", "user": user}}],
            "current-context": "hetsched-local",
        }
        path.write_text(yaml.safe_dump(document, sort_keys=False))
        path.chmod(0o600)

    # nodes
    def apply_nodes(self, pools: PoolFile, timeout: float = 60) -> list[NodeStatus]:
        """Create (or update the labels/taints of) the pools' nodes and wait until they are Ready."""
        with self._lock():
            return self._apply_nodes(pools, timeout)

    def _apply_nodes(self, pools: PoolFile, timeout: float) -> list[NodeStatus]:
        start = time.monotonic()
        names = {n for p in pools.pools for n in node_names(p)}
        self.kubectl("apply", "-f", "-", input=json.dumps(node_list(pools)))

        def all_ready() -> list[NodeStatus] | None:
            nodes = [n for n in self.nodes() if n.name in names]
            return nodes if len(nodes) == len(names) and all(n.ready for n in nodes) else None

        nodes = wait_for(all_ready, timeout, f"{len(names)} nodes to be Ready")
        self.log(
            f"  {len(nodes)} nodes of {len(pools.pools)} pools Ready after {time.monotonic() - start:.1f}s"
        )
        return nodes

    def delete_nodes(self, pools: PoolFile, timeout: float = 60) -> None:
        """Delete the pools' nodes (their pods are then garbage-collected by the controller-manager)."""
        names = sorted({n for p in pools.pools for n in node_names(p)})
        with self._lock():
            self.kubectl("delete", "nodes", "--ignore-not-found", *names, timeout=timeout)
            wait_for(
                lambda: not any(n.name in names for n in self.nodes()),
                timeout,
                f"{len(names)} nodes to be deleted",
            )

    def stop_heartbeats(self, names: Sequence[str], timeout: float = 60) -> None:
        """Simulate losing nodes: KWOK stops heartbeating them, so after the node grace period
        the node-lifecycle controller marks them not Ready (Ready=Unknown, ``unreachable`` taint).
        Their pods stay bound until the taint-based eviction (300 s by default).
        Undo with :meth:`resume_heartbeats`.
        """
        with self._lock():
            self.kubectl("annotate", "node", *names, f"{KWOK_ANNOTATION}-")
            self._restart_kwok(timeout)

    def resume_heartbeats(self, names: Sequence[str], timeout: float = 60) -> None:
        """Undo :meth:`stop_heartbeats`: KWOK manages the nodes again and reports them Ready."""
        with self._lock():
            self.kubectl("annotate", "node", *names, KWOK_NODE_SELECTOR, "--overwrite")
            self._restart_kwok(timeout)

    def _restart_kwok(self, timeout: float) -> None:
        """Restart KWOK so it re-reads which nodes carry its annotation.

        KWOK 0.7 only takes up or drops a node when it starts (or the node is created or
        deleted): it keeps heartbeating a node that lost the annotation and ignores one that
        regained it. The node Leases are deleted while it is down: the new KWOK has a new holder
        identity and would otherwise wait for the old Leases to expire (40 s), longer than a short
        grace period. The other nodes miss about a second of heartbeat.
        """
        self._stop_component("kwok", timeout)
        self.kubectl("delete", "leases", "--all", "-n", "kube-node-lease")
        config = self._config()
        self._launch_component("kwok", Path(config.bin_dir), config)
        self._wait_healthy("kwok", self._health_check("kwok", config.ports), timeout)

    # single components (fault injection: the others keep running)
    def stop_component(self, name: str, timeout: float = 15, kill: bool = False) -> None:
        """Stop one component: SIGTERM (SIGKILL after ``timeout``), or SIGKILL at once (``kill``:
        a crash). Bring it back with :meth:`start_component`; its data (etcd) is kept."""
        if name not in COMPONENTS:
            raise ValueError(f"unknown component {name!r} (one of {', '.join(COMPONENTS)})")
        with self._lock():
            self._stop_component(name, timeout, kill=kill)

    def start_component(self, name: str, timeout: float = 60) -> None:
        """Start one stopped component with its usual command line and wait until it is healthy."""
        if name not in COMPONENTS:
            raise ValueError(f"unknown component {name!r} (one of {', '.join(COMPONENTS)})")
        with self._lock():
            record = self.records().get(name)
            if record is not None and record.is_alive():
                return
            config = self._config()
            self._launch_component(name, Path(config.bin_dir), config)
            self._wait_healthy(name, self._health_check(name, config.ports), timeout)

    def restart_component(
        self, name: str, down_seconds: float = 0.0, timeout: float = 60, kill: bool = False
    ) -> None:
        """:meth:`stop_component`, wait ``down_seconds``, :meth:`start_component`."""
        self.stop_component(name, timeout, kill=kill)
        time.sleep(down_seconds)
        self.start_component(name, timeout)

    def _stop_component(self, name: str, timeout: float, kill: bool = False) -> None:
        record = self.records()[name]
        if record.is_alive():
            if kill:
                os.kill(record.pid, signal.SIGKILL)
                if self._wait_gone([record], 10):
                    raise ClusterError(f"{name} (pid {record.pid}) still running after SIGKILL")
                return
            os.kill(record.pid, signal.SIGTERM)
            if self._wait_gone([record], timeout):
                os.kill(record.pid, signal.SIGKILL)
                if self._wait_gone([record], 10):
                    raise ClusterError(f"{name} (pid {record.pid}) still running after SIGKILL")

    # down
    def down(self, timeout: float = 15, keep_state: bool = False) -> list[ProcessRecord]:
        """Stop the processes this state folder started, check they are gone, remove the state.

        Returns the records of the processes that were running.
        """
        with self._lock():
            if not self.state_dir.exists():
                self.log(f"no cluster in {self.state_dir}: nothing to stop")
                return []
            stopped = self._stop(timeout)
            if not keep_state:
                shutil.rmtree(self.state_dir)
            return stopped

    def _stop(self, timeout: float) -> list[ProcessRecord]:
        records = self.records()
        stopped: list[ProcessRecord] = []
        for phase in STOP_PHASES:
            live = [records[n] for n in phase if n in records and records[n].is_alive()]
            for record in live:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(record.pid, signal.SIGTERM)
            start = time.monotonic()
            remaining = self._wait_gone(live, timeout)
            for record in remaining:
                self.log(f"  {record.name} (pid {record.pid}) ignored SIGTERM for {timeout:.0f}s: SIGKILL")
                with contextlib.suppress(ProcessLookupError):
                    os.kill(record.pid, signal.SIGKILL)
            if self._wait_gone(remaining, 10):
                raise ClusterError(f"processes still running after SIGKILL: {[r.pid for r in remaining]}")
            for record in live:
                self.log(f"  stopped {record.name} (pid {record.pid}) in {time.monotonic() - start:.1f}s")
            stopped += live
        for record in records.values():  # also reap ones that had already died
            _reap(record.pid)
        return stopped

    @staticmethod
    def _wait_gone(records: list[ProcessRecord], timeout: float) -> list[ProcessRecord]:
        deadline = time.monotonic() + timeout
        while True:
            for record in records:
                _reap(record.pid)
            remaining = [r for r in records if r.is_alive()]
            if not remaining or time.monotonic() > deadline:
                return remaining
            time.sleep(0.1)
