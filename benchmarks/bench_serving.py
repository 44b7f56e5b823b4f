"""Serving latency on this machine: time to first token (TTFT) and time per output token (TPOT) of a
tiny random-weight Llama through the disaggregated rendering (router -> prefill engine -> KV transfer
over NIXL -> decode engine) against the colocated rendering (one engine), medians of repetitions.

Both workloads are what ``hetsched render`` produces for the pools of tests/serving/data/pools.yaml
(one one-core node per pool), run as real vLLM CPU engines and the real vllm-router by the local
kubelet of the tests (tests/support/kubelet.py) on a real local control plane. The routed requests
are measured first (the colocated engine idle); then the P/D engines are deleted and the colocated
engine is measured alone, so neither run shares its cores with the other's busy engines.

    python benchmarks/bench_serving.py [--reps 9] [--max-tokens 64] [--cpu-manager static|none] [--json OUT]

``--cpu-manager none`` runs the pods as a kubelet without the static CPU manager would: every engine on
every core of the machine, which is what made routed requests take 13-28 s (docs/serving.md, "Latency
on CPU pools"). Needs the engine environment (``make engines``) and the control plane's binaries
(``make controlplane``); engine start-up takes minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the serving test bed (PYTHONSAFEPATH=1 leaves it off)
from hetsched.operator.devcluster.nodes import load_pools  # noqa: E402
from serving import workloads  # noqa: E402
from support.engines import engine_env, metric_sum, metrics, request, tiny_model  # noqa: E402
from support.servingbed import ServingBed, host_cpus  # noqa: E402

POOLS = REPO / "tests" / "serving" / "data" / "pools.yaml"
NAMESPACE = "bench"
PROMPT = "Tell me about the red river and the mountain city, the prefill engine and the decode engine. " * 3
NIXL_COUNT = "vllm:nixl_xfer_time_seconds_count"


def measure(base: str, model: str, reps: int, max_tokens: int, warmup: int = 2) -> dict[str, Any]:
    """Streaming greedy completions, one at a time: TTFT, TPOT and end-to-end medians over ``reps``."""
    for _ in range(warmup):
        assert request(base, model, PROMPT, stream=True, max_tokens=max_tokens).status == 200
    ttft, tpot, e2e = [], [], []
    for _ in range(reps):
        r = request(base, model, PROMPT, stream=True, max_tokens=max_tokens, timeout=600)
        assert r.status == 200 and r.ttft is not None and r.usage, r
        tokens = r.usage["completion_tokens"]
        ttft.append(r.ttft)
        tpot.append((r.seconds - r.ttft) / max(tokens - 1, 1))
        e2e.append(r.seconds)
    return {
        "n": reps,
        "prompt_tokens": r.usage["prompt_tokens"],
        "completion_tokens": tokens,
        "ttft_s": statistics.median(ttft),
        "tpot_s": statistics.median(tpot),
        "e2e_s": statistics.median(e2e),
        "e2e_min_s": min(e2e),
        "e2e_max_s": max(e2e),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=9)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--cpu-manager", choices=("static", "none"), default="static")
    ap.add_argument("--json", type=Path, help="write the figures here as JSON")
    opts = ap.parse_args()

    env = engine_env()
    model_dir = tiny_model(env)
    cores = host_cpus()
    cpus = {"cpu-prefill": (cores[0],), "cpu-decode": (cores[-1],), "cpu-colo": (cores[0],)}
    if opts.cpu_manager == "none":
        cpus = {pool: cores for pool in cpus}
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp:
        bed = ServingBed(Path(tmp), env, load_pools(POOLS), cpus, cpu_manager_policy=opts.cpu_manager).up()
        try:
            pd = workloads.render(POOLS, workloads.pd_workload(NAMESPACE, model_dir))
            colo = workloads.render(POOLS, workloads.colocated_workload(NAMESPACE, model_dir))
            bed.apply(pd + colo)
            bed.wait_ready(NAMESPACE, {"hetsched.io/workload": workloads.PD_NAME}, 3, 1800)
            bed.wait_ready(NAMESPACE, {"hetsched.io/workload": workloads.COLO_NAME}, 1, 1800)
            startup = time.monotonic() - t0
            print(f"engines ready after {startup:.0f} s (cpu manager: {opts.cpu_manager})", file=sys.stderr)

            decode = bed.run(
                NAMESPACE, {"hetsched.io/workload": workloads.PD_NAME, "hetsched.io/phase": "decode"}
            )
            decode_url = f"http://{decode.ip}:8000"
            before = metric_sum(metrics(decode_url), NIXL_COUNT)
            routed = measure(
                bed.endpoint(NAMESPACE, workloads.PD_NAME),
                workloads.served_model(pd),
                opts.reps,
                opts.max_tokens,
            )
            routed["kv_transfers"] = metric_sum(metrics(decode_url), NIXL_COUNT) - before

            # The colocated engine alone: the P/D engines (and their NIXL threads) gone.
            bed.kubectl(
                "delete", "deployment", "-n", NAMESPACE, "-l", f"hetsched.io/workload={workloads.PD_NAME}"
            )
            deadline = time.monotonic() + 300
            while bed.kubelet is not None and bed.kubelet.find(
                NAMESPACE, {"hetsched.io/workload": workloads.PD_NAME}
            ):
                assert time.monotonic() < deadline, "the P/D pods did not go"
                time.sleep(1)
            colocated = measure(
                bed.endpoint(NAMESPACE, workloads.COLO_NAME),
                workloads.served_model(colo),
                opts.reps,
                opts.max_tokens,
            )
        finally:
            bed.down()

    result = {
        "cpu_manager": opts.cpu_manager,
        "cores": len(cores),
        "startup_s": round(startup, 1),
        "routed": routed,
        "colocated": colocated,
    }
    print(f"{'':12}{'TTFT p50':>10}{'TPOT p50':>10}{'e2e p50':>10}{'e2e min-max':>16}  (n, tokens in/out)")
    for name in ("routed", "colocated"):
        m = result[name]
        print(
            f"{name:12}{m['ttft_s']:>9.3f}s{m['tpot_s'] * 1000:>8.1f}ms{m['e2e_s']:>9.3f}s"
            f"{m['e2e_min_s']:>8.2f}-{m['e2e_max_s']:.2f}s  ({m['n']}, {m['prompt_tokens']}/{m['completion_tokens']})"
        )
    print(f"KV transfers into the decode engine during the routed run: {routed['kv_transfers']:g}")
    if opts.json:
        opts.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
