"""The operator under load, against a real local control plane in a private temporary folder:
500 AgentWorkloads on 2,000 fake (KWOK) nodes in five pools.

Prints (and writes as JSON with ``--out``):

* time until every workload has a ``Placed`` condition for its generation (placed or infeasible),
  from the first create;
* reconcile rate: ``hetsched_reconcile_total`` (all results) per second while placing;
* operator resident memory: idle, peak while placing, after;
* API requests per reconcile: every HTTP request the operator process makes (Kopf's and the
  reconciler's clients; counted in-process with an aiohttp trace hook, by verb and resource),
  divided by the reconciles; cross-checked against the API server's own ``apiserver_request_total``
  for AgentWorkloads, which only the operator (and this script's creates) touch;
* the number of metric series on ``/metrics``: after placing, after a quiet period that includes
  a periodic resync, and after 10% of the workloads changed spec (re-planned) — it must stay under
  the bound ``workloads × (2 phases × per-phase series + per-workload series) + pools × per-pool
  series + fixed`` (``series_bound``) and not grow with time.

    python benchmarks/bench_load.py [--nodes 2000] [--workloads 500] [--settle 75] [--out FILE] [--keep]

Binaries come from ``hetsched cluster build``'s cache. Takes 5-10 minutes on 2 cores (most of it
the control plane: 2,000 nodes heartbeating and the pods of 500 workloads being scheduled).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # see common.py
from common import REPO, WORKLOAD_MIX, pools_doc, rss_mib
from common import manifest as workload_manifest

NS = "load"


def manifest(i: int) -> dict[str, Any]:
    return workload_manifest(i, NS, WORKLOAD_MIX)


# ---- the operator, with its HTTP requests counted ------------------------------------------------
def classify(method: str, url: Any) -> str:
    """``VERB resource[/subresource]`` of a Kubernetes API request (``WATCH``/``LIST``/``GET``/...)."""
    parts = [p for p in url.path.split("/") if p]
    if parts[:1] == ["api"]:
        rest = parts[2:]
    elif parts[:1] == ["apis"]:
        rest = parts[3:]
    else:
        return f"{method} {url.path}"
    if len(rest) >= 2 and rest[0] == "namespaces" and len(rest) != 2:
        rest = rest[2:]
    resource = rest[0] if rest else "(discovery)"
    named = len(rest) >= 2
    sub = f"/{rest[2]}" if len(rest) >= 3 else ""
    verb = {"POST": "CREATE", "PATCH": "PATCH", "PUT": "UPDATE", "DELETE": "DELETE"}.get(method, "")
    if method == "GET":
        verb = "WATCH" if url.query.get("watch") in ("true", "1") else ("GET" if named else "LIST")
    return f"{verb} {resource}{sub}"


def run_counting_operator(argv: list[str]) -> int:
    """``hetsched operator run`` with every aiohttp request counted into ``$HETSCHED_BENCH_COUNTS``."""
    import aiohttp

    counts: collections.Counter[str] = collections.Counter()
    lock = threading.Lock()

    async def on_start(session: Any, ctx: Any, params: Any) -> None:
        key = classify(params.method, params.url)
        with lock:
            counts[key] += 1

    original = aiohttp.ClientSession.__init__

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        trace = aiohttp.TraceConfig()
        trace.on_request_start.append(on_start)
        kwargs["trace_configs"] = [*(kwargs.get("trace_configs") or []), trace]
        original(self, *args, **kwargs)

    aiohttp.ClientSession.__init__ = init  # type: ignore[method-assign]
    path = os.environ["HETSCHED_BENCH_COUNTS"]

    def dump() -> None:
        while True:
            time.sleep(0.5)
            with lock:
                data = dict(counts)
            tmp = path + ".tmp"
            Path(tmp).write_text(json.dumps(data))
            os.replace(tmp, path)

    threading.Thread(target=dump, name="bench-counts", daemon=True).start()
    from hetsched.operator.cli import main as hetsched_main

    return hetsched_main(argv)


# ---- measurements ----------------------------------------------------------------------------------
def apiserver_counts(cluster: Any) -> dict[str, float]:
    """``apiserver_request_total`` for AgentWorkloads by ``VERB[/subresource]``."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    pki = cluster.pki
    context = ssl.create_default_context(cafile=str(pki.ca_cert))
    context.load_cert_chain(pki.client_cert("admin"), pki.client_key("admin"))
    with urllib.request.urlopen(cluster.server + "/metrics", context=context, timeout=30) as r:
        text = r.read().decode()
    out: dict[str, float] = collections.defaultdict(float)
    for family in text_string_to_metric_families(text):
        if family.name != "apiserver_request":
            continue
        for s in family.samples:
            if s.name == "apiserver_request_total" and s.labels.get("resource") == "agentworkloads":
                sub = s.labels.get("subresource") or ""
                out[s.labels["verb"] + (f"/{sub}" if sub else "")] += s.value
    return dict(out)


def operator_metrics(url: str) -> tuple[dict[str, float], dict[str, int], int]:
    """(reconciles by result, series per family, total series) from the operator's /metrics."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(url + "/metrics", timeout=30).text
    reconciles: dict[str, float] = {}
    series: dict[str, int] = {}
    for family in text_string_to_metric_families(text):
        series[family.name] = len(family.samples)
        if family.name == "hetsched_reconcile":
            for s in family.samples:
                if s.name == "hetsched_reconcile_total":
                    reconciles[s.labels["result"]] = s.value
    return reconciles, series, sum(series.values())


def delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {k: after.get(k, 0) - before.get(k, 0) for k in sorted(set(after) | set(before))}


def read_counts(path: Path) -> dict[str, float]:
    time.sleep(1.0)  # the operator writes its counts every 0.5 s
    try:
        return {k: float(v) for k, v in json.loads(path.read_text()).items()}
    except (OSError, ValueError):
        return {}


async def create_all(kubeconfig: str, docs: list[dict[str, Any]], concurrency: int = 16) -> float:
    from kubernetes_asyncio import client, config

    conf = client.Configuration()
    await config.load_kube_config(config_file=kubeconfig, client_configuration=conf)
    t0 = time.monotonic()
    async with client.ApiClient(conf) as api:
        custom = client.CustomObjectsApi(api)
        sem = asyncio.Semaphore(concurrency)

        async def one(doc: dict[str, Any]) -> None:
            async with sem:
                await custom.create_namespaced_custom_object(
                    "hetsched.io", "v1alpha1", NS, "agentworkloads", doc
                )

        await asyncio.gather(*(one(d) for d in docs))
    return time.monotonic() - t0


async def patch_all(kubeconfig: str, names: list[str], concurrency: int = 16) -> None:
    from kubernetes_asyncio import client, config

    conf = client.Configuration()
    await config.load_kube_config(config_file=kubeconfig, client_configuration=conf)
    async with client.ApiClient(conf) as api:
        custom = client.CustomObjectsApi(api)
        sem = asyncio.Semaphore(concurrency)

        async def one(name: str) -> None:
            async with sem:
                await custom.patch_namespaced_custom_object(
                    "hetsched.io",
                    "v1alpha1",
                    NS,
                    "agentworkloads",
                    name,
                    {"metadata": {"labels": {"bench": "churn"}}, "spec": {"maxBatch": 32}},
                    _content_type="application/merge-patch+json",
                )

        await asyncio.gather(*(one(n) for n in names))


def decided(cluster: Any, condition: str = "Placed") -> tuple[int, int, int]:
    """(workloads, with ``condition`` True or False for their generation, with it True)."""
    out = cluster.kubectl("get", "agentworkloads", "-n", NS, "-o", "json", timeout=120).stdout
    done = true = 0
    items = json.loads(out)["items"]
    for w in items:
        status = w.get("status") or {}
        if status.get("observedGeneration") != w["metadata"]["generation"]:
            continue
        c = next((c for c in status.get("conditions") or [] if c["type"] == condition), None)
        if c is not None and c["status"] in ("True", "False"):
            done += 1
            true += c["status"] == "True"
    return len(items), done, true


def wait_decided(
    cluster: Any, total: int, op_pid: int, timeout: float, peak: list[float], first: list[float] | None = None
) -> tuple[float, int]:
    """Until every workload has a Placed condition for its generation; (seconds, placed)."""
    t0 = time.monotonic()
    last = -1
    while time.monotonic() - t0 < timeout:
        n, done, placed = decided(cluster)
        peak[0] = max(peak[0], rss_mib(op_pid))
        if done != last:
            print(f"  {time.monotonic() - t0:6.1f} s: {done}/{total} decided ({placed} placed)", flush=True)
            last = done
        if first is not None and done and not first:
            first.append(time.monotonic() - t0)
        if n == total and done == total:
            return time.monotonic() - t0, placed
        time.sleep(2)
    raise TimeoutError(f"not all {total} workloads decided within {timeout:.0f} s")


def wait_ready(cluster: Any, placed: int, timeout: float) -> tuple[float | None, int]:
    """Until every placed workload is Ready (its pods Running on the chosen pools, as the
    Deployments' status says); (seconds or None on timeout, Ready workloads)."""
    t0 = time.monotonic()
    last = -1
    ready = 0
    while time.monotonic() - t0 < timeout:
        _, _, ready = decided(cluster, "Ready")
        if ready != last:
            print(f"  {time.monotonic() - t0:6.1f} s: {ready}/{placed} Ready", flush=True)
            last = ready
        if ready >= placed:
            return time.monotonic() - t0, ready
        time.sleep(3)
    return None, ready


def series_bound(series: dict[str, int], workloads: int, pools: int) -> tuple[int, int]:
    """(bound, fixed): the most series the families present can have for ``workloads`` and ``pools``.

    Per workload and phase (2): one series per ``hetsched_phase_*`` family, three for the regime;
    per workload: one per ``hetsched_workload_*`` family, four for the conditions; one per pool and
    ``hetsched_pool_*`` family; the rest (counters, histograms, build info) is fixed.
    """
    per_workload = fixed = per_pool = 0
    for family, n in series.items():
        if family.startswith("hetsched_phase_"):
            per_workload += 2 * (3 if family == "hetsched_phase_regime" else 1)
        elif family.startswith("hetsched_workload_"):
            per_workload += 4 if family == "hetsched_workload_condition" else 1
        elif family.startswith("hetsched_pool_"):
            per_pool += 1
        else:
            fixed += n
    return workloads * per_workload + pools * per_pool + fixed, fixed


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--as-operator":
        return run_counting_operator(sys.argv[2:])
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nodes", type=int, default=2000)
    parser.add_argument("--workloads", type=int, default=500)
    parser.add_argument("--settle", type=float, default=75.0, help="quiet period (s; includes a resync)")
    parser.add_argument("--resync-seconds", type=float, default=60.0)
    parser.add_argument("--churn", type=float, default=0.1, help="share of workloads whose spec changes")
    parser.add_argument("--timeout", type=float, default=1200.0, help="give up placing after this (s)")
    parser.add_argument(
        "--ready-timeout", type=float, default=300.0, help="wait at most this for the pods (s), then go on"
    )
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON")
    parser.add_argument("--keep", action="store_true", help="leave the cluster running (prints where)")
    args = parser.parse_args()

    import httpx
    from hetsched.operator.devcluster.cluster import Cluster
    from hetsched.operator.devcluster.nodes import parse_pools

    pools = parse_pools(pools_doc(args.nodes), "bench pools")
    state = Path(tempfile.mkdtemp(prefix="hetsched-load-")) / "cluster"
    cluster = Cluster(state, log=lambda m: None)
    results: dict[str, Any] = {"nodes": args.nodes, "workloads": args.workloads, "pools": len(pools.pools)}
    t0 = time.perf_counter()
    cluster.up(pools, timeout=600)
    results["cluster_up_seconds"] = round(time.perf_counter() - t0, 1)
    print(
        f"control plane with {args.nodes} KWOK nodes Ready in {results['cluster_up_seconds']:.0f} s",
        flush=True,
    )
    op: subprocess.Popen[bytes] | None = None
    try:
        cluster.kubectl("apply", "--server-side", "-f", str(REPO / "crds"))
        for crd in ("agentworkloads.hetsched.io", "acceleratorprofiles.hetsched.io"):
            cluster.kubectl("wait", "--for=condition=Established", f"crd/{crd}", "--timeout=60s")
        cluster.kubectl("create", "namespace", NS)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        counts_path = state.parent / "requests.json"
        log = state.parent / "operator.log"
        env = {
            **cluster.env(),
            "KUBECONFIG": str(cluster.kubeconfig),
            "HETSCHED_BENCH_COUNTS": str(counts_path),
            "PYTHONUNBUFFERED": "1",
        }
        argv = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--as-operator",
            "operator",
            "run",
            "--namespace",
            NS,
            "--port",
            str(port),
            "--host",
            "127.0.0.1",
            "--startup-grace-seconds",
            "2",
            "--resync-seconds",
            f"{args.resync_seconds:g}",
        ]
        with log.open("wb") as out:
            op = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if op.poll() is not None:
                raise RuntimeError(f"operator exited {op.returncode}; log {log}")
            try:
                if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        time.sleep(3)
        rss_idle = rss_mib(op.pid)
        req0, api0 = read_counts(counts_path), apiserver_counts(cluster)
        rec0, _, _ = operator_metrics(url)

        # 1. Burst: every workload created at once (16 concurrent creates).
        docs = [manifest(i) for i in range(args.workloads)]
        t_first = time.monotonic()
        create_s = asyncio.run(create_all(str(cluster.kubeconfig), docs))
        print(f"{args.workloads} workloads created in {create_s:.1f} s", flush=True)
        peak = [rss_idle]
        first: list[float] = []
        _, placed = wait_decided(cluster, args.workloads, op.pid, args.timeout, peak, first)
        place_s = time.monotonic() - t_first
        req1, api1 = read_counts(counts_path), apiserver_counts(cluster)
        rec1, series1, total1 = operator_metrics(url)
        rss_placed = rss_mib(op.pid)
        reconciles = sum(delta(rec1, rec0).values())
        requests = delta(req1, req0)
        non_watch = sum(v for k, v in requests.items() if not k.startswith("WATCH"))
        results.update(
            create_seconds=round(create_s, 1),
            all_decided_seconds=round(place_s, 1),
            first_decided_seconds=round(first[0], 1) if first else None,
            placed=placed,
            infeasible=args.workloads - placed,
            reconciles=reconciles,
            reconciles_by_result=delta(rec1, rec0),
            reconcile_rate_per_second=round(reconciles / place_s, 2),
            operator_requests=non_watch,
            operator_requests_by_kind=requests,
            requests_per_reconcile=round(non_watch / max(1, reconciles), 2),
            requests_per_workload=round(non_watch / args.workloads, 2),
            apiserver_agentworkload_requests=delta(api1, api0),
            rss_mib={"idle": round(rss_idle), "peak": round(peak[0]), "placed": round(rss_placed)},
            series_after_placing=total1,
        )

        # 2. The pods roll out (scheduler, KWOK); then a quiet period with a periodic resync in it:
        #    requests and series must not grow.
        ready_s, ready_n = wait_ready(cluster, placed, args.ready_timeout)
        results["all_ready_seconds_after_decided"] = None if ready_s is None else round(ready_s, 1)
        results["ready_after_wait"] = ready_n
        req1, rec1 = read_counts(counts_path), operator_metrics(url)[0]
        time.sleep(args.settle)
        req2 = read_counts(counts_path)
        rec2, series2, total2 = operator_metrics(url)
        idle_requests = delta(req2, req1)
        results.update(
            settle_seconds=args.settle,
            idle_requests=sum(v for k, v in idle_requests.items() if not k.startswith("WATCH")),
            idle_requests_by_kind={k: v for k, v in idle_requests.items() if v},
            idle_reconciles=sum(delta(rec2, rec1).values()),
            series_after_settle=total2,
        )

        # 3. Churn: a share of the workloads change spec (re-planned, children rewritten).
        churn = [d["metadata"]["name"] for d in docs[:: max(1, round(1 / args.churn))]]
        t_churn = time.monotonic()
        asyncio.run(patch_all(str(cluster.kubeconfig), churn))
        wait_decided(cluster, args.workloads, op.pid, args.timeout, peak)
        churn_s = time.monotonic() - t_churn
        req3 = read_counts(counts_path)
        rec3, series3, total3 = operator_metrics(url)
        churn_requests = delta(req3, req2)
        churn_reconciles = sum(delta(rec3, rec2).values())
        bound, fixed = series_bound(series3, args.workloads, len(pools.pools))
        results.update(
            churn_workloads=len(churn),
            churn_seconds=round(churn_s, 1),
            churn_reconciles=churn_reconciles,
            churn_requests=sum(v for k, v in churn_requests.items() if not k.startswith("WATCH")),
            series_after_churn=total3,
            series_by_family=series3,
            series_bound=bound,
            series_fixed=fixed,
            rss_mib={**results["rss_mib"], "end": round(rss_mib(op.pid)), "peak": round(peak[0])},
        )
        del series1, series2

        r = results
        print()
        print(f"nodes {r['nodes']} in {r['pools']} pools; workloads {r['workloads']}")
        print(
            f"all decided {r['all_decided_seconds']:.1f} s after the first create "
            f"({r['placed']} placed, {r['infeasible']} infeasible; creates took {r['create_seconds']:.1f} s)"
        )
        print(
            f"reconciles {r['reconciles']:.0f} while placing: {r['reconcile_rate_per_second']:.1f}/s "
            f"({', '.join(f'{k} {v:.0f}' for k, v in r['reconciles_by_result'].items() if v)})"
        )
        top = sorted(((v, k) for k, v in r["operator_requests_by_kind"].items() if v), reverse=True)[:10]
        print(
            f"operator API requests while placing: {r['operator_requests']:.0f} (watches not counted) = "
            f"{r['requests_per_reconcile']:.2f} per reconcile, {r['requests_per_workload']:.2f} per workload"
        )
        print("  " + ", ".join(f"{k} {v:.0f}" for v, k in top))
        print(f"  API server's count for agentworkloads: {r['apiserver_agentworkload_requests']}")
        print(
            f"first decided {r['first_decided_seconds']} s after the first create; "
            f"{r['ready_after_wait']} Ready {r['all_ready_seconds_after_decided'] or args.ready_timeout:g} s "
            "after all were decided"
        )
        print(
            f"quiet {r['settle_seconds']:.0f} s (incl. a resync): {r['idle_requests']:.0f} requests, "
            f"{r['idle_reconciles']:.0f} reconciles"
        )
        print(
            f"churn: {r['churn_workloads']} spec changes re-planned in {r['churn_seconds']:.1f} s, "
            f"{r['churn_reconciles']:.0f} reconciles, {r['churn_requests']:.0f} requests"
        )
        print(
            f"operator RSS: {r['rss_mib']['idle']} MiB idle, {r['rss_mib']['peak']} MiB peak, "
            f"{r['rss_mib']['end']} MiB at the end"
        )
        print(
            f"metric series: {r['series_after_placing']} after placing, {r['series_after_settle']} after the "
            f"quiet period, {r['series_after_churn']} after the churn (bound {r['series_bound']})"
        )
        apiserver = next(
            (c for c in cluster.status(query_api=False).components if c.name == "kube-apiserver"), None
        )
        if apiserver is not None:
            r["apiserver_rss_mib"] = round(apiserver.rss_mib or 0)
            print(f"kube-apiserver RSS: {r['apiserver_rss_mib']} MiB")
        if args.out:
            args.out.write_text(json.dumps(r, indent=2) + "\n")
            print(f"figures written to {args.out}")
    finally:
        if op is not None and op.poll() is None:
            op.send_signal(signal.SIGTERM)
            try:
                op.wait(30)
            except subprocess.TimeoutExpired:
                op.kill()
                op.wait(10)
        if args.out:
            with contextlib.suppress(OSError):
                shutil.copy(state.parent / "operator.log", args.out.with_suffix(".operator.log"))
        if args.keep:
            print(f"cluster kept: {state} (hetsched cluster down --state-dir {state})")
        else:
            cluster.down()
            shutil.rmtree(state.parent, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
