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

import contextlib
import fcntl
import functools
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml
from hetsched.operator.devcluster import build, certs
from hetsched.operator.devcluster.components import (
    COMPONENTS,
    KWOK_NODE_SELECTOR,
    SERVICE_IP,
    STOP_PHASES,
    ClusterConfig,
    Ports,
    apiserver_args,
    controller_manager_args,
    etcd_args,
    kubeconfig_document,
    kwok_args,
    scheduler_args,
    scheduler_configuration,
)
from hetsched.operator.devcluster.nodes import KWOK_ANNOTATION, PoolFile, node_list, node_names
from hetsched.operator.devcluster.processes import (
    ClusterError,
    ComponentExited,
    ProcessRecord,
    free_ports,
    http_get,
    log_tail,
    proc_stat,
    reap,
    rss_mib,
    spawn,
    wait_for,
)
from hetsched.scheduler.pools import POOL_LABEL

Log = Callable[[str], None]


def default_state_dir() -> Path:
    """``$HETSCHED_CLUSTER_DIR``, else ``$XDG_STATE_HOME/hetsched/cluster`` (~/.local/state/...)."""
    if env := os.environ.get("HETSCHED_CLUSTER_DIR"):
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_STATE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".local" / "state") / "hetsched" / "cluster"


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


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
                reap(record.pid)
            components.append(
                ComponentStatus(
                    name=name,
                    running=alive,
                    pid=record.pid if record else None,
                    port=config.ports.of(name) if config else None,
                    rss_mib=rss_mib(record.pid) if record and alive else None,
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
        ports = Ports(*free_ports(6))
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
            self._launch(name, bins, etcd_args(ports, self.state_dir))
        elif name == "kube-apiserver":
            self._launch(name, bins, apiserver_args(ports, pki, self.state_dir))
        elif name == "kube-controller-manager":
            kubeconfig = self._component_kubeconfig(name)
            self._launch(name, bins, controller_manager_args(config, pki, kubeconfig))
        elif name == "kube-scheduler":
            self._write_scheduler_config()
            kubeconfig = self._component_kubeconfig(name)
            self._launch(name, bins, scheduler_args(ports, self.scheduler_config_path, kubeconfig))
        elif name == "kwok":
            # HOME inside the state folder: KWOK would otherwise also read ~/.kwok/kwok.yaml.
            args = kwok_args(ports, self._component_kubeconfig(name))
            self._launch(name, bins, args, env={"HOME": str(self.state_dir / "kwok-home")})
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
            reap(ProcessRecord(**json.loads(self._pid_path(name).read_text())).pid)
        exe = os.path.realpath(bins / name)  # what /proc/<pid>/exe will show
        log_path = self.log_path(name)
        log_path.write_text(f"# {exe} {' '.join(args)}\n")
        pid = spawn([exe, *args], log_path, dict(os.environ) | (env or {}))
        stat = proc_stat(pid)
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
                reap(record.pid)
                raise ComponentExited(f"{name} exited during start-up; log {log}:\n{log_tail(log)}")
            return check()

        try:
            wait_for(probe, timeout, what or f"{name} to be healthy")
        except ComponentExited:
            raise
        except ClusterError as exc:
            raise ClusterError(f"{exc}; log {log}:\n{log_tail(log)}") from None
        self.log(f"  {what or name}: ready after {time.monotonic() - start:.1f}s")

    @staticmethod
    def _http_ok(url: str, context: ssl.SSLContext | None = None) -> bool:
        return http_get(url, context, timeout=2)[0] == 200

    def _apiserver_ready(self) -> bool:
        return http_get(f"{self.server}/readyz", self._ssl_context(), timeout=2)[0] == 200

    @property
    def scheduler_config_path(self) -> Path:
        return self.state_dir / "kube-scheduler.yaml"

    def _write_scheduler_config(self) -> None:
        """The kube-scheduler's ``KubeSchedulerConfiguration``: GPU bin packing (see
        :func:`~.components.scheduler_configuration`). Written at every start, so a restart picks
        up changes."""
        document = scheduler_configuration(self._component_kubeconfig("kube-scheduler"))
        self.scheduler_config_path.write_text(yaml.safe_dump(document, sort_keys=False))

    def _write_kubeconfig(self, path: Path, client: str) -> None:
        path.write_text(yaml.safe_dump(kubeconfig_document(self.server, self.pki, client), sort_keys=False))
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
            reap(record.pid)
        return stopped

    @staticmethod
    def _wait_gone(records: list[ProcessRecord], timeout: float) -> list[ProcessRecord]:
        deadline = time.monotonic() + timeout
        while True:
            for record in records:
                reap(record.pid)
            remaining = [r for r in records if r.is_alive()]
            if not remaining or time.monotonic() > deadline:
                return remaining
            time.sleep(0.1)
