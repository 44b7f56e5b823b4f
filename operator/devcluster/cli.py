"""``hetsched cluster build|up|down|status|env|nodes``: the local control plane from the shell."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from hetsched.operator.devcluster import build
from hetsched.operator.devcluster.cluster import Cluster, ClusterStatus, default_state_dir
from hetsched.operator.devcluster.nodes import load_pools
from hetsched.operator.devcluster.processes import ClusterError

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_POOLS = REPO_ROOT / "examples" / "pools" / "demo.yaml"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    cluster = subparsers.add_parser(
        "cluster",
        help="local Kubernetes control plane with KWOK fake GPU node pools",
        description="A real kube-apiserver/etcd/controller-manager/scheduler with KWOK fake nodes, "
        "on loopback ports; binaries are built once from the Go module proxy and cached.",
    )
    commands = cluster.add_subparsers(dest="cluster_command", metavar="ACTION", required=True)

    def with_state_dir(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
        parser.add_argument(
            "--state-dir",
            type=Path,
            default=None,
            help=f"cluster state folder (default $HETSCHED_CLUSTER_DIR or {default_state_dir()})",
        )
        return parser

    p = commands.add_parser("build", help="build (or reuse) the pinned binaries; print their folder")
    p.add_argument("--force", action="store_true", help="rebuild even if the cache has them")
    p.set_defaults(func=cmd_build)

    p = with_state_dir(commands.add_parser("up", help="start the cluster and create the pool nodes"))
    pools = p.add_mutually_exclusive_group()
    pools.add_argument(
        "--pools", type=Path, default=None, help=f"pools YAML (default {_display(DEFAULT_POOLS)})"
    )
    pools.add_argument("--no-pools", action="store_true", help="create no nodes")
    p.add_argument("--timeout", type=float, default=120, help="seconds to wait for each component")
    p.add_argument(
        "--node-grace-period",
        type=float,
        default=None,
        metavar="SECONDS",
        help="seconds without heartbeat before a node is NotReady (default: Kubernetes' 50)",
    )
    p.set_defaults(func=cmd_up)

    p = with_state_dir(commands.add_parser("down", help="stop the cluster's processes and remove its state"))
    p.add_argument("--keep-state", action="store_true", help="keep the state folder (logs) after stopping")
    p.add_argument("--timeout", type=float, default=15, help="seconds between SIGTERM and SIGKILL")
    p.set_defaults(func=cmd_down)

    p = with_state_dir(commands.add_parser("status", help="components (pid, port, memory) and nodes"))
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_status)

    p = with_state_dir(commands.add_parser("env", help='print shell exports: eval "$(hetsched cluster env)"'))
    p.set_defaults(func=cmd_env)

    nodes = commands.add_parser("nodes", help="add or remove pool nodes, or simulate losing nodes")
    actions = nodes.add_subparsers(dest="action", metavar="ACTION", required=True)
    for action, text in (
        ("apply", "create the nodes of a pools file (wait until Ready)"),
        ("delete", "delete them"),
    ):
        p = with_state_dir(actions.add_parser(action, help=text))
        p.add_argument("--pools", type=Path, required=True, help="pools YAML")
        p.add_argument("--timeout", type=float, default=60)
        p.set_defaults(func=cmd_nodes)
    for action, text in (
        ("lose", "stop the nodes' heartbeats: NotReady after the node grace period"),
        ("restore", "resume the nodes' heartbeats: Ready again in seconds"),
    ):
        p = with_state_dir(actions.add_parser(action, help=text))
        p.add_argument("names", nargs="+", metavar="NODE")
        p.add_argument("--timeout", type=float, default=60)
        p.set_defaults(func=cmd_heartbeats)


def _display(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def cmd_build(args: argparse.Namespace) -> int:
    try:
        print(build.ensure_binaries(force=args.force))
    except build.BuildError as exc:
        print(f"hetsched cluster build: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    pools = None
    if not args.no_pools:
        path = args.pools or DEFAULT_POOLS
        if args.pools is None and not path.exists():
            print(f"no default pools file at {path}: starting without nodes", file=sys.stderr)
        else:
            pools = load_pools(path)
    cluster = Cluster(args.state_dir)
    try:
        status = cluster.up(pools, timeout=args.timeout, node_grace_period=args.node_grace_period)
    except (ClusterError, build.BuildError) as exc:
        print(f"hetsched cluster up: {exc}", file=sys.stderr)
        return 1
    _print_status(status)
    print(
        f"\nUse it:\n  export KUBECONFIG={status.kubeconfig}\n"
        f"  export PATH={cluster.bin_dir}:$PATH   # kubectl/helm at the server's version\n"
        f"  kubectl get nodes -L hetsched.io/pool,nvidia.com/gpu.product\n"
        f'or: eval "$(hetsched cluster env{_state_flag(args)})"'
    )
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    cluster = Cluster(args.state_dir)
    existed = cluster.state_dir.exists()
    try:
        stopped = cluster.down(timeout=args.timeout, keep_state=args.keep_state)
    except ClusterError as exc:
        print(f"hetsched cluster down: {exc}", file=sys.stderr)
        return 1
    if stopped:
        print(f"stopped {len(stopped)} processes: " + ", ".join(f"{r.name} ({r.pid})" for r in stopped))
    if existed and not args.keep_state:
        print(f"removed {cluster.state_dir}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    status = Cluster(args.state_dir).status()
    if args.json:
        print(json.dumps(status.to_json(), indent=2))
    else:
        _print_status(status)
    return 0 if status.all_running else 1


def cmd_env(args: argparse.Namespace) -> int:
    cluster = Cluster(args.state_dir)
    if cluster.load_config() is None:
        print(f"no cluster in {cluster.state_dir}", file=sys.stderr)
        return 1
    env = cluster.env()
    for name in (
        "KUBECONFIG",
        "PATH",
        "KUBECACHEDIR",
        "HELM_CACHE_HOME",
        "HELM_CONFIG_HOME",
        "HELM_DATA_HOME",
    ):
        print(f"export {name}={shlex.quote(env[name])}")
    return 0


def cmd_nodes(args: argparse.Namespace) -> int:
    pools = load_pools(args.pools)
    cluster = Cluster(args.state_dir)
    try:
        if args.action == "apply":
            nodes = cluster.apply_nodes(pools, timeout=args.timeout)
            print(f"{len(nodes)} nodes Ready: {', '.join(n.name for n in nodes)}")
        else:
            cluster.delete_nodes(pools, timeout=args.timeout)
            print(f"deleted the nodes of {', '.join(p.name for p in pools.pools)}")
    except ClusterError as exc:
        print(f"hetsched cluster nodes: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_heartbeats(args: argparse.Namespace) -> int:
    cluster = Cluster(args.state_dir)
    try:
        if args.action == "lose":
            cluster.stop_heartbeats(args.names, timeout=args.timeout)
            print(f"stopped the heartbeats of {', '.join(args.names)}: NotReady after the node grace period")
        else:
            cluster.resume_heartbeats(args.names, timeout=args.timeout)
            print(f"resumed the heartbeats of {', '.join(args.names)}")
    except ClusterError as exc:
        print(f"hetsched cluster nodes: {exc}", file=sys.stderr)
        return 1
    return 0


def _state_flag(args: argparse.Namespace) -> str:
    return f" --state-dir {shlex.quote(str(args.state_dir))}" if args.state_dir else ""


def _print_status(status: ClusterStatus) -> None:
    if not status.exists:
        print(f"no cluster in {status.state_dir}")
        return
    print(f"cluster {status.state_dir}\n  server {status.server}\n  kubeconfig {status.kubeconfig}")
    for c in status.components:
        state = "running" if c.running else "STOPPED"
        memory = f"  {c.rss_mib:.0f} MiB" if c.rss_mib is not None else ""
        print(f"  {c.name:<24} {state:<8} pid {c.pid or '-':<8} port {c.port or '-'}{memory}")
    if status.api_error:
        print(f"  API not reachable: {status.api_error}")
        return
    pools: dict[str, list[bool]] = {}
    for node in status.nodes:
        pools.setdefault(node.pool or "(no pool)", []).append(node.ready)
    if pools:
        print(
            "  nodes Ready per pool: " + ", ".join(f"{p} {sum(r)}/{len(r)}" for p, r in sorted(pools.items()))
        )
    elif status.all_running:
        print("  no KWOK nodes")
