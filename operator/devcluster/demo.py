"""``make demo`` / ``make demo-down``: the local cluster, the CRDs, the example workloads and the
operator in the background, then the placement table.

    python -m hetsched.operator.devcluster.demo up [--port 8080] [--workloads 'examples/workloads/*.yaml']
    python -m hetsched.operator.devcluster.demo down

State (pid file, operator log) lives in ``$HETSCHED_DEMO_DIR`` (default
``~/.local/state/hetsched/demo``); the cluster is ``hetsched cluster``'s default one
(``$HETSCHED_CLUSTER_DIR``).
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import yaml
from hetsched.operator.reconcile.status import get_condition

REPO = Path(__file__).resolve().parents[1]
DEFAULT_POOLS = REPO / "examples" / "pools" / "demo.yaml"
DEFAULT_WORKLOADS = str(REPO / "examples" / "workloads" / "*.yaml")


def state_dir() -> Path:
    base = os.environ.get("HETSCHED_DEMO_DIR") or os.path.expanduser("~/.local/state/hetsched/demo")
    return Path(base)


def _say(msg: str) -> None:
    print(f"[demo] {msg}", flush=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _is_demo_operator(pid: int) -> bool:
    """Whether ``pid`` runs ``hetsched.operator operator run`` (a pid from a stale pid file may
    belong to another process by now; Linux only, elsewhere any live pid counts)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except FileNotFoundError:
        return _alive(pid) and not Path("/proc/self").exists()
    except OSError:
        return False
    return b"hetsched.operator" in argv and b"run" in argv


def _read_pid(path: Path) -> int | None:
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if _alive(pid) and _is_demo_operator(pid) else None


def _wait(check: Any, timeout: float, what: str, interval: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            result = check()
            if result:
                return result
        time.sleep(interval)
    raise SystemExit(f"[demo] timed out after {timeout:g}s waiting for {what}")


def _namespaces(paths: list[str]) -> list[str]:
    out = set()
    for path in paths:
        for doc in yaml.safe_load_all(Path(path).read_text()):
            if isinstance(doc, dict) and doc.get("kind") == "AgentWorkload":
                out.add((doc.get("metadata") or {}).get("namespace") or "default")
    return sorted(out)


def up(args: argparse.Namespace) -> int:
    from hetsched.operator.devcluster.cluster import Cluster
    from hetsched.operator.devcluster.nodes import load_pools

    started = time.monotonic()
    sdir = state_dir()
    sdir.mkdir(parents=True, exist_ok=True)
    cluster = Cluster(log=lambda m: _say(m))
    _say("local cluster (hetsched cluster up) ...")
    cluster.up(load_pools(args.pools))
    env = {**os.environ, **cluster.env()}

    def kubectl(*argv: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess[str]:
        result: subprocess.CompletedProcess[str] = cluster.kubectl(*argv, check=check, input=input)
        return result

    _say("CRDs (crds/*.yaml) ...")
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
    for crd in ("agentworkloads.hetsched.io", "acceleratorprofiles.hetsched.io"):
        kubectl("wait", "--for=condition=Established", f"crd/{crd}", "--timeout=60s")

    pid_file, log_file = sdir / "operator.pid", sdir / "operator.log"
    url = f"http://127.0.0.1:{args.port}"
    pid = _read_pid(pid_file)
    if pid is None:
        _say(f"operator in the background (log {log_file}) ...")
        with log_file.open("ab") as log:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "hetsched.operator",
                    "operator",
                    "run",
                    "--port",
                    str(args.port),
                    "--startup-grace-seconds",
                    "3",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=REPO,
                start_new_session=True,
            )
        pid_file.write_text(f"{proc.pid}\n")
        pid = proc.pid
    else:
        _say(f"operator already running (pid {pid})")
    _wait(
        lambda: _alive(pid) and httpx.get(url + "/readyz", timeout=2).status_code == 200, 90, "the operator"
    )

    paths = sorted(glob.glob(args.workloads))
    if not paths:
        raise SystemExit(f"[demo] no workloads match {args.workloads}")
    for ns in _namespaces(paths):
        if kubectl("get", "namespace", ns, check=False).returncode != 0:
            kubectl("create", "namespace", ns)
    _say(f"workloads: {', '.join(Path(p).name for p in paths)}")
    for path in paths:
        kubectl("apply", "-f", path)

    def all_decided() -> list[dict[str, Any]] | None:
        items: list[dict[str, Any]] = json.loads(kubectl("get", "aw", "-A", "-o", "json").stdout)["items"]
        for aw in items:
            st = aw.get("status") or {}
            placed = [c for c in st.get("conditions") or [] if c.get("type") == "Placed"]
            if st.get("observedGeneration") != aw["metadata"]["generation"] or not placed:
                return None
        return items

    items = _wait(all_decided, 120, "every workload to be placed (or found infeasible)")
    # Placed is not Ready: the pods still have to be scheduled and started (a second or two on
    # KWOK). Wait for that, but not for pods the kube-scheduler cannot place: those stay Pending.
    stuck: dict[str, str] = {}
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        items = json.loads(kubectl("get", "aw", "-A", "-o", "json").stdout)["items"]
        stuck = {}
        waiting = False
        for aw in _not_ready(items):
            meta = aw["metadata"]
            why = _unschedulable(kubectl, meta["namespace"], meta["name"])
            if why is None:
                waiting = True
            else:
                stuck[f"{meta['namespace']}/{meta['name']}"] = why
        if not waiting:
            break
        time.sleep(0.5)
    print()
    print(kubectl("get", "aw", "-A").stdout)
    print(summary(items, httpx.get(url + "/v1/pools", timeout=10).json(), stuck))
    print(KWOK_NOTE)
    print(f"\nmetrics:  {url}/metrics      API: {url}/v1/pools  {url}/v1/workloads  docs: {url}/docs")
    print(f"operator: pid {pid}, log {log_file}")
    print('kubectl:  eval "$(hetsched cluster env)"; kubectl get aw -A; kubectl get deploy,pods -A -o wide')
    print(f"stop:     make demo-down        (demo took {time.monotonic() - started:.0f}s)")
    return 0


#: KWOK nodes report pods Running without running them: the endpoints exist but nothing answers.
KWOK_NOTE = (
    "\nnote:     the nodes are KWOK's: pods are scheduled and reported Running, but no container runs,\n"
    "          so the endpoints above do not answer here. On a real cluster (kind, GPU nodes) they serve\n"
    "          the OpenAI API: docs/serving.md."
)


def _condition(aw: Mapping[str, Any], type_: str) -> Mapping[str, Any]:
    return get_condition((aw.get("status") or {}).get("conditions"), type_) or {}


def _not_ready(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Placed workloads whose Deployments are not all available yet."""
    return [
        aw
        for aw in items
        if _condition(aw, "Placed").get("status") == "True"
        and _condition(aw, "Ready").get("status") != "True"
    ]


def _unschedulable(kubectl: Any, namespace: str, name: str) -> str | None:
    """Why a pod of the workload cannot be scheduled (None: none is stuck)."""
    pods = json.loads(
        kubectl("get", "pods", "-n", namespace, "-l", f"hetsched.io/workload={name}", "-o", "json").stdout
    )["items"]
    for pod in sorted(pods, key=lambda p: p["metadata"]["name"]):
        for cond in (pod.get("status") or {}).get("conditions") or []:
            if cond.get("type") == "PodScheduled" and cond.get("reason") == "Unschedulable":
                # The scheduler's first sentence says why ("0/10 nodes are available: ..."); the
                # rest is about preemption.
                message = str(cond.get("message") or "Unschedulable").split(". ")[0].rstrip(".")
                return f"pod {pod['metadata']['name']} Pending: {message}"
    return None


def _seconds(x: Any) -> str:
    return "-" if x is None else f"{float(x):.3g}s"


def summary(items: list[dict[str, Any]], pools: dict[str, Any], stuck: dict[str, str] | None = None) -> str:
    """A few lines per workload (mode, pools, regimes, cost, latency against the SLO, why it is
    not placed or not Ready) and the pools' device use."""
    stuck = stuck or {}
    lines = ["placement:"]
    for aw in sorted(items, key=lambda a: (a["metadata"]["namespace"], a["metadata"]["name"])):
        st = aw.get("status") or {}
        name = f"{aw['metadata']['namespace']}/{aw['metadata']['name']}"
        if not st.get("mode"):
            placed: dict[str, Any] = next(
                (c for c in st.get("conditions") or [] if c.get("type") == "Placed"), {}
            )
            lines.append(
                f"  {name:<28} NOT PLACED ({placed.get('reason')}): {placed.get('message', '')[:140]}"
            )
            continue
        pre, dec = st["prefill"], st["decode"]
        cost = st.get("dollarsPerMillionTokens")
        if st["mode"] == "colocated":
            where = (
                f"colocated on {dec['pool']} (TP {dec['tp']} x {dec['replicas']}, batch {dec['batch']}, "
                f"decode {dec['regime']})"
            )
        else:
            where = (
                f"prefill {pre['pool']} (TP {pre['tp']} x {pre['replicas']}, {pre['regime']}) -> "
                f"decode {dec['pool']} (TP {dec['tp']} x {dec['replicas']}, batch {dec['batch']}, {dec['regime']})"
            )
        lines.append(
            f"  {name:<28} {where}, ${cost:.3g}/Mtok" if cost is not None else f"  {name:<28} {where}"
        )
        slo = (aw.get("spec") or {}).get("slo") or {}
        lines.append(
            f"  {'':<28} OI prefill {pre['operationalIntensity']:.4g} / decode {dec['operationalIntensity']:.4g} "
            f"FLOP/B (ridge {pre.get('ridgePoint') or 0:.4g} / {dec.get('ridgePoint') or 0:.4g}); "
            f"TTFT {_seconds(st.get('ttftSeconds'))} (SLO {_seconds(slo.get('ttftSeconds'))}), "
            f"TPOT {_seconds(st.get('tpotSeconds'))} (SLO {_seconds(slo.get('tpotSeconds'))})"
        )
        if st.get("endpoint"):
            via = "the P/D router" if st["mode"] == "disaggregated" else "the engine pods"
            lines.append(f"  {'':<28} endpoint {st['endpoint']} (OpenAI API, Service -> {via})")
        ready = _condition(aw, "Ready")
        if ready.get("status") != "True":
            why = stuck.get(name) or ready.get("message") or ready.get("reason") or "not ready"
            lines.append(f"  {'':<28} NOT READY: {why[:300]}")
    lines.append("pools (devices allocated / total):")
    for p in pools.get("pools", []):
        lines.append(
            f"  {p['name']:<10} {p['hardware'] or '?':<12} {p['devicesAllocated']:>3} / {p['devices']:<3}"
        )
    return "\n".join(lines)


def down(args: argparse.Namespace) -> int:
    from hetsched.operator.devcluster.cluster import Cluster

    pid_file = state_dir() / "operator.pid"
    pid = _read_pid(pid_file)
    if pid is not None:
        _say(f"stopping the operator (pid {pid})")
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
    pid_file.unlink(missing_ok=True)
    if not args.keep_cluster:
        _say("stopping the local cluster (hetsched cluster down)")
        stopped = Cluster(log=lambda m: _say(m)).down()
        _say(f"stopped {len(stopped)} processes")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hetsched.operator.devcluster.demo")
    sub = parser.add_subparsers(dest="action", required=True)
    p_up = sub.add_parser("up")
    p_up.add_argument("--port", type=int, default=int(os.environ.get("DEMO_PORT", "8080")))
    p_up.add_argument("--pools", default=str(DEFAULT_POOLS))
    p_up.add_argument("--workloads", default=DEFAULT_WORKLOADS, help="glob of AgentWorkload files")
    p_up.set_defaults(func=up)
    p_down = sub.add_parser("down")
    p_down.add_argument("--keep-cluster", action="store_true", help="stop only the operator")
    p_down.set_defaults(func=down)
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
