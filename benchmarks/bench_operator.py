"""Operator at scale, against a real local control plane (etcd, kube-apiserver, controller-manager,
scheduler, KWOK) in a private temporary folder:

1. apply-to-Placed latency, p50/p95, over 100 workloads created one after another (from the
   create call returning to the watch event carrying ``Placed=True``);
2. time to place 500 workloads created in a burst, on 1,000 fake (KWOK) nodes, from the first
   create to the last ``Placed`` condition (placed or found infeasible);
3. the operator's resident memory at that size;
4. for reference, one in-process planning round of the same 500 workloads on the same 1,000
   nodes (no API server).

    python benchmarks/bench_operator.py [--nodes 1000] [--latency 100] [--burst 500] [--keep]

Binaries come from ``hetsched cluster build``'s cache. Takes a few minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))  # see common.py
from common import REPO, WORKLOAD_MIX, pools_doc, rss_mib
from common import manifest as workload_manifest

# The first four shapes of the mix: they fit the pools below (small demands: many fit at once).
SPECS = WORKLOAD_MIX[:4]


def manifest(i: int, namespace: str) -> dict[str, Any]:
    return workload_manifest(i, namespace, SPECS)


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q / 100 * (len(s) - 1))))]


class Watcher:
    """Records when each AgentWorkload first shows a Placed condition (True, or False = infeasible)."""

    def __init__(self, kubeconfig: str, namespace: str) -> None:
        self.kubeconfig, self.namespace = kubeconfig, namespace
        self.placed: dict[str, float] = {}
        self.outcome: dict[str, str] = {}
        self.event = asyncio.Event()

    async def run(self) -> None:
        from kubernetes_asyncio import client, config, watch

        conf = client.Configuration()
        await config.load_kube_config(config_file=self.kubeconfig, client_configuration=conf)
        async with client.ApiClient(conf) as api:
            custom = client.CustomObjectsApi(api)
            while True:  # a watch that breaks (timeouts under load, 410 Gone) is simply restarted
                try:
                    w = watch.Watch()
                    async for ev in w.stream(
                        custom.list_namespaced_custom_object,
                        "hetsched.io",
                        "v1alpha1",
                        self.namespace,
                        "agentworkloads",
                        timeout_seconds=300,
                    ):
                        obj = ev["object"]
                        if not isinstance(obj, dict) or "metadata" not in obj:
                            continue
                        name = obj["metadata"]["name"]
                        st = obj.get("status") or {}
                        for c in st.get("conditions") or []:
                            if c.get("type") == "Placed" and name not in self.placed:
                                self.placed[name] = time.perf_counter()
                                self.outcome[name] = c.get("status", "")
                                self.event.set()
                except asyncio.CancelledError:
                    raise
                except Exception:
                    await asyncio.sleep(0.5)


async def create(
    kubeconfig: str, docs: list[dict[str, Any]], concurrency: int, stamps: dict[str, float]
) -> None:
    from kubernetes_asyncio import client, config

    conf = client.Configuration()
    await config.load_kube_config(config_file=kubeconfig, client_configuration=conf)
    async with client.ApiClient(conf) as api:
        custom = client.CustomObjectsApi(api)
        sem = asyncio.Semaphore(concurrency)

        async def one(doc: dict[str, Any]) -> None:
            from kubernetes_asyncio.client.exceptions import ApiException

            async with sem:
                for attempt in range(10):
                    try:
                        await custom.create_namespaced_custom_object(
                            "hetsched.io", "v1alpha1", doc["metadata"]["namespace"], "agentworkloads", doc
                        )
                        break
                    except ApiException as exc:
                        if exc.status == 409:  # a timed-out create that went through
                            break
                        if exc.status not in (429, 500, 503, 504) or attempt == 9:
                            raise
                        await asyncio.sleep(0.5 * (attempt + 1))
                stamps[doc["metadata"]["name"]] = time.perf_counter()

        await asyncio.gather(*(one(d) for d in docs))


async def measure(
    kubeconfig: str, namespace: str, latency_n: int, burst_n: int, op_pid: int
) -> dict[str, Any]:
    watcher = Watcher(kubeconfig, namespace)
    task = asyncio.create_task(watcher.run())
    await asyncio.sleep(1.0)
    results: dict[str, Any] = {}
    # 1. one at a time
    latencies = []
    stamps: dict[str, float] = {}
    for i in range(latency_n):
        doc = manifest(i, namespace)
        await create(kubeconfig, [doc], 1, stamps)
        name = doc["metadata"]["name"]
        deadline = time.perf_counter() + 120
        while name not in watcher.placed and time.perf_counter() < deadline:
            watcher.event.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(watcher.event.wait(), 1.0)
        if name in watcher.placed:
            latencies.append(watcher.placed[name] - stamps[name])
    results["latency"] = latencies
    results["latency_placed"] = sum(1 for i in range(latency_n) if watcher.outcome.get(f"w{i:04d}") == "True")
    # 2. a burst
    docs = [manifest(latency_n + i, namespace) for i in range(burst_n)]
    t0 = time.perf_counter()
    burst_stamps: dict[str, float] = {}
    await create(kubeconfig, docs, 16, burst_stamps)
    created = time.perf_counter() - t0
    names = {d["metadata"]["name"] for d in docs}
    deadline = time.perf_counter() + 900
    while not names <= set(watcher.placed) and time.perf_counter() < deadline:
        watcher.event.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(watcher.event.wait(), 2.0)
    done = [watcher.placed[n] for n in names if n in watcher.placed]
    results["burst_seconds"] = (max(done) - t0) if done else float("nan")
    results["burst_create_seconds"] = created
    results["burst_decided"] = len(done)
    results["burst_placed"] = sum(1 for n in names if watcher.outcome.get(n) == "True")
    results["rss_mib"] = rss_mib(op_pid)
    task.cancel()
    return results


def in_process_round(nodes_doc: list[dict[str, Any]], n: int) -> tuple[float, int]:
    """One planning round of ``n`` workloads on the nodes, in this process (no API server)."""
    from hetsched.operator.planning.intake import Registration, resolve
    from hetsched.operator.planning.plans import plan_workloads
    from hetsched.operator.pools.build import build_pools
    from hetsched.operator.pools.nodes import fingerprint
    from hetsched.scheduler.nodes import group_pools, project_node
    from hetsched.scheduler.placement.planner import shared_cache

    projs = []
    for node in nodes_doc:
        st = dict(node["status"], conditions=[{"type": "Ready", "status": "True"}])
        p = project_node(node["metadata"]["name"], node["metadata"]["labels"], node.get("spec", {}), st)
        if p is not None:
            projs.append(p)
    live = group_pools(projs)
    pools = build_pools(live, [], fingerprint=fingerprint(live))
    regs = []
    for i in range(n):
        doc = manifest(i, "bench")
        req, model_id = resolve("bench", doc["metadata"]["name"], doc["spec"])
        regs.append(Registration(("bench", doc["metadata"]["name"]), 1, f"u{i}", req, doc["spec"], model_id))
    shared_cache().__init__()  # cold cache
    t0 = time.perf_counter()
    plans = plan_workloads(regs, pools)
    return time.perf_counter() - t0, sum(p.placed for p in plans.values())


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--latency", type=int, default=100, help="workloads created one by one")
    parser.add_argument("--burst", type=int, default=500, help="workloads created at once")
    parser.add_argument("--keep", action="store_true", help="leave the cluster running (prints where)")
    args = parser.parse_args()

    from hetsched.operator.devcluster.cluster import Cluster
    from hetsched.operator.devcluster.nodes import node_manifests, parse_pools

    pools = parse_pools(pools_doc(args.nodes), "bench pools")
    nodes_doc = node_manifests(pools)
    secs, placed = in_process_round(nodes_doc, args.burst)
    print(
        f"in-process planning round: {args.burst} workloads on {args.nodes} nodes in {secs:.2f} s ({placed} placed)"
    )

    state = Path(tempfile.mkdtemp(prefix="hetsched-bench-")) / "cluster"
    cluster = Cluster(state, log=lambda m: None)
    t0 = time.perf_counter()
    cluster.up(pools, timeout=300)
    print(f"control plane with {args.nodes} KWOK nodes Ready in {time.perf_counter() - t0:.0f} s")
    op: subprocess.Popen[bytes] | None = None
    try:
        cluster.kubectl("apply", "--server-side", "-f", str(REPO / "crds"))
        for crd in ("agentworkloads.hetsched.io", "acceleratorprofiles.hetsched.io"):
            cluster.kubectl("wait", "--for=condition=Established", f"crd/{crd}", "--timeout=60s")
        ns = "bench"
        cluster.kubectl("create", "namespace", ns)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        log = state.parent / "operator.log"
        env = {**cluster.env(), "KUBECONFIG": str(cluster.kubeconfig)}
        with log.open("wb") as out:
            op = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "hetsched.operator",
                    "operator",
                    "run",
                    "--namespace",
                    ns,
                    "--port",
                    str(port),
                    "--host",
                    "127.0.0.1",
                    "--startup-grace-seconds",
                    "2",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=REPO,
            )
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        rss0 = rss_mib(op.pid)
        r = asyncio.run(measure(str(cluster.kubeconfig), ns, args.latency, args.burst, op.pid))
        lat = r["latency"]
        if lat:
            print(
                f"apply-to-Placed latency over {len(lat)} workloads (one at a time): "
                f"p50 {pct(lat, 50) * 1000:.0f} ms, p95 {pct(lat, 95) * 1000:.0f} ms, "
                f"mean {statistics.mean(lat) * 1000:.0f} ms ({r['latency_placed']} placed)"
            )
        print(
            f"burst: {args.burst} workloads created in {r['burst_create_seconds']:.1f} s; all {r['burst_decided']} "
            f"decided {r['burst_seconds']:.1f} s after the first create ({r['burst_placed']} placed, "
            f"{args.latency} already present) on {args.nodes} nodes"
        )
        metrics = httpx.get(url + "/metrics", timeout=10).text
        rounds = [ln for ln in metrics.splitlines() if ln.startswith("hetsched_plan_duration_seconds_")]
        print(
            "planner rounds: "
            + ", ".join(
                ln.split(" ")[0].split("_")[-1] + "=" + ln.split(" ")[1]
                for ln in rounds
                if ln.startswith(
                    ("hetsched_plan_duration_seconds_count", "hetsched_plan_duration_seconds_sum")
                )
            )
        )
        print(
            f"operator RSS: {rss0:.0f} MiB idle, {r['rss_mib']:.0f} MiB with {args.latency + args.burst} workloads "
            f"and {args.nodes} nodes indexed"
        )
    finally:
        if op is not None and op.poll() is None:
            op.send_signal(signal.SIGTERM)
            try:
                op.wait(20)
            except subprocess.TimeoutExpired:
                op.kill()
                op.wait(10)
        if args.keep:
            print(f"cluster kept: {state} (hetsched cluster down --state-dir {state})")
        else:
            cluster.down()
            shutil.rmtree(state.parent, ignore_errors=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
