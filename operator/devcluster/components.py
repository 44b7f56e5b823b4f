"""The components of the local control plane and their command lines: etcd, kube-apiserver,
kube-controller-manager, kube-scheduler (with GPU bin packing) and KWOK.

Pure functions of the ports, the PKI and the state folder; :class:`~.cluster.Cluster` launches them.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hetsched.operator.devcluster import certs
from hetsched.operator.devcluster.nodes import KWOK_ANNOTATION

SERVICE_CIDR = "10.96.0.0/16"
SERVICE_IP = "10.96.0.1"  # first address of SERVICE_CIDR: the `kubernetes` Service
POD_CIDR = "10.244.0.1/16"  # KWOK hands out fake pod IPs from here
SA_ISSUER = "https://kubernetes.default.svc.cluster.local"
KWOK_NODE_SELECTOR = f"{KWOK_ANNOTATION}=fake"

# Start order; stopped in reverse phases (clients first, so the apiserver has no watches to drain).
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
STOP_PHASES = (("kwok", "kube-scheduler", "kube-controller-manager"), ("kube-apiserver",), ("etcd",))


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


def etcd_args(ports: Ports, state_dir: Path) -> list[str]:
    peer = f"http://127.0.0.1:{ports.etcd_peer}"
    client = f"http://127.0.0.1:{ports.etcd}"
    return [
        "--name=hetsched",
        f"--data-dir={state_dir / 'etcd'}",
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


def apiserver_args(ports: Ports, pki: certs.Pki, state_dir: Path) -> list[str]:
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
        f"--cert-dir={state_dir / 'pki'}",
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


def delegated_auth_args(kubeconfig: Path) -> list[str]:
    return [
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        "--leader-elect=false",
        "--bind-address=127.0.0.1",
    ]


def controller_manager_args(config: ClusterConfig, pki: certs.Pki, kubeconfig: Path) -> list[str]:
    # All default controllers, node-lifecycle included: KWOK nodes that stop heartbeating go
    # NotReady after --node-monitor-grace-period and their pods are evicted.
    ports = config.ports
    grace = []
    if config.node_grace_period is not None:
        grace = [f"--node-monitor-grace-period={config.node_grace_period:g}s"]
    return [
        *grace,
        *delegated_auth_args(kubeconfig),
        f"--secure-port={ports.controller_manager}",
        f"--service-account-private-key-file={pki.service_account_key}",
        f"--root-ca-file={pki.ca_cert}",
        "--use-service-account-credentials=true",
        f"--cluster-signing-cert-file={pki.ca_cert}",
        f"--cluster-signing-key-file={pki.ca_key}",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
    ]


def scheduler_args(ports: Ports, config_path: Path, kubeconfig: Path) -> list[str]:
    # With --config the kubeconfig and leader election come from the file (clientConnection,
    # leaderElection); --kubeconfig would be ignored. --leader-elect=false is honoured too.
    args = [a for a in delegated_auth_args(kubeconfig) if not a.startswith("--kubeconfig=")]
    return [f"--config={config_path}", *args, f"--secure-port={ports.scheduler}"]


def kwok_args(ports: Ports, kubeconfig: Path) -> list[str]:
    return [
        f"--kubeconfig={kubeconfig}",
        "--manage-all-nodes=false",
        f"--manage-nodes-with-annotation-selector={KWOK_NODE_SELECTOR}",
        f"--cidr={POD_CIDR}",
        "--node-ip=10.0.0.1",
        f"--server-address=127.0.0.1:{ports.kwok}",
        # Heartbeat by Lease renewed every 10 s, like a kubelet. Without it KWOK falls back to
        # status updates every 20-45 s, too close to the controller-manager's 50 s grace period.
        "--node-lease-duration-seconds=40",
    ]


def kubeconfig_document(server: str, pki: certs.Pki, client: str) -> dict[str, Any]:
    """A kubeconfig for ``client`` (``admin``: system:masters), its certificates embedded."""

    def b64(p: Path) -> str:
        return base64.b64encode(p.read_bytes()).decode()

    user = "admin" if client == "admin" else client
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "hetsched-local",
                "cluster": {"server": server, "certificate-authority-data": b64(pki.ca_cert)},
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
