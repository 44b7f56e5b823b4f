"""Real serving, end to end: what ``hetsched render`` produces for a disaggregated workload of a tiny
random-weight Llama, run as real vLLM CPU engines and the real vllm-router by the local kubelet
(tests/support/kubelet.py) on a real control plane; the router finds the engines by Kubernetes pod
discovery, as rendered. The colocated rendering of the same model is the reference for greedy output.

The engines start once for this module (conftest ``deployed``); the fault test runs last.
"""

from __future__ import annotations

import time

import pytest
from support.engines import metric_sum, metrics, request
from support.kubelet import PodRun

from serving.conftest import NAMESPACE, Deployed

# The first test also starts the engines (minutes on two busy cores): a wide per-test timeout.
pytestmark = [pytest.mark.engines, pytest.mark.timeout(3000)]

PROMPTS = (
    "Hello world, the prefill engine moves the kv cache to the decode engine",
    "Tell me about the red river and the mountain city",
    "one two three four five six seven eight nine ten " * 8,
)
NIXL_COUNT = "vllm:nixl_xfer_time_seconds_count"
ERROR_BOUND_S = 15.0  # a request while the decode engine is down is answered with an error within this
RECOVERY_BOUND_S = 60.0  # after the restarted engine is Ready: router health checks every 5 s, 2 successes


def engine(deployed: Deployed, phase: str) -> PodRun:
    return deployed.bed.run(NAMESPACE, {"hetsched.io/workload": deployed.pd.name, "hetsched.io/phase": phase})


def engine_metrics(run: PodRun) -> dict[str, float]:
    port = next(p["containerPort"] for p in run.containers[0].spec["ports"] if p["name"] == "http")
    return metrics(f"http://{run.ip}:{port}")


def test_the_rendering_runs_as_rendered(deployed: Deployed) -> None:
    """Each container runs its rendered command line; the only differences from a pod are the
    executable's local path, wildcard listen addresses narrowed to the pod's own, and the service
    account token handed over as a kubeconfig. The router discovers the engines by their labels."""
    bed = deployed.bed
    assert bed.kubelet is not None
    kinds = {s.kind for _, _, s in bed.kubelet.substitutions}
    assert kinds <= {"interpreter", "wildcard-address", "service-account-token"}, kinds
    for key, container, sub in bed.kubelet.substitutions:
        if sub.kind == "interpreter":
            assert sub.before in ("python3", "vllm-router"), (key, container, sub)
    tokens = [key for key, _, s in bed.kubelet.substitutions if s.kind == "service-account-token"]
    assert tokens and all("-router-" in key for key in tokens), tokens  # engines: no token mounted
    router = deployed.bed.run(
        NAMESPACE, {"hetsched.io/workload": deployed.pd.name, "hetsched.io/phase": "router"}
    )
    args = router.containers[0].argv
    assert "--service-discovery" in args and "--prefill" not in args and "--decode" not in args, args
    # Each engine on its pool's node, on its own exclusive core (Guaranteed QoS, static CPU manager).
    prefill, decode = engine(deployed, "prefill"), engine(deployed, "decode")
    assert prefill.node.startswith("cpu-prefill") and decode.node.startswith("cpu-decode")
    assert prefill.containers[0].exclusive and decode.containers[0].exclusive
    assert set(prefill.containers[0].cpus).isdisjoint(decode.containers[0].cpus)
    assert prefill.ip != decode.ip != router.ip


@pytest.mark.parametrize("chat", [False, True], ids=["completions", "chat"])
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streaming"])
def test_requests_through_the_endpoint_move_the_kv_cache(
    deployed: Deployed, chat: bool, stream: bool
) -> None:
    """A request to the workload's endpoint comes back with tokens; the decode engine pulled the
    prompt's KV cache from the prefill engine (NIXL transfer counter) instead of computing it."""
    decode = engine(deployed, "decode")
    before = engine_metrics(decode)
    reply = request(
        deployed.pd.endpoint, deployed.pd.model, PROMPTS[0], chat=chat, stream=stream, max_tokens=16
    )
    assert reply.status == 200, reply.body
    assert reply.text.strip(), reply
    if stream:
        assert reply.chunks > 1, reply
    assert reply.usage and reply.usage["completion_tokens"] == 16, reply.usage
    after = engine_metrics(decode)
    assert metric_sum(after, NIXL_COUNT) > metric_sum(before, NIXL_COUNT), (
        "no KV transfer into the decode engine"
    )


def test_prompt_tokens_came_by_transfer(deployed: Deployed) -> None:
    """The decode engine computed none of the prompt: every prompt token arrived by KV transfer."""
    decode = engine(deployed, "decode")
    before = engine_metrics(decode)
    reply = request(deployed.pd.endpoint, deployed.pd.model, PROMPTS[1], max_tokens=8)
    assert reply.status == 200, reply.body
    after = engine_metrics(decode)
    delta = {
        source: metric_sum(after, "vllm:prompt_tokens_by_source_total", source=source)
        - metric_sum(before, "vllm:prompt_tokens_by_source_total", source=source)
        for source in ("local_compute", "local_cache_hit", "external_kv_transfer")
    }
    prompt = reply.usage["prompt_tokens"] if reply.usage else 0
    assert delta["external_kv_transfer"] >= prompt - 1 > 0, (delta, prompt)
    assert delta["local_compute"] <= 1, delta  # at most the last token, recomputed by design


@pytest.mark.parametrize("chat", [False, True], ids=["completions", "chat"])
def test_greedy_output_equals_colocated(deployed: Deployed, chat: bool) -> None:
    """Greedy decoding through prefill -> KV transfer -> decode gives the colocated engine's tokens."""
    for prompt in PROMPTS:
        routed = request(deployed.pd.endpoint, deployed.pd.model, prompt, chat=chat, max_tokens=48)
        colocated = request(
            deployed.colocated.endpoint, deployed.colocated.model, prompt, chat=chat, max_tokens=48
        )
        assert routed.status == colocated.status == 200, (routed.body, colocated.body)
        assert routed.text == colocated.text, (prompt, routed.text, colocated.text)


def test_decode_killed_then_restarted(deployed: Deployed) -> None:
    """The decode engine dies: the endpoint answers with an error, quickly, no hang. The kubelet
    restarts it; once it is Ready again, requests through the router succeed again."""
    bed = deployed.bed
    assert bed.kubelet is not None
    decode = engine(deployed, "decode")
    container = decode.containers[0]
    assert request(deployed.pd.endpoint, deployed.pd.model, PROMPTS[0], max_tokens=4).status == 200
    restarts, readies = container.restarts, len(container.ready_times)
    bed.kubelet.kill(decode)
    errors = []
    for _ in range(3):
        reply = request(
            deployed.pd.endpoint, deployed.pd.model, PROMPTS[0], max_tokens=4, timeout=ERROR_BOUND_S * 4
        )
        errors.append(reply)
        assert reply.status >= 500, f"expected an error while decode is down: {reply}"
        assert reply.seconds < ERROR_BOUND_S, f"the error took {reply.seconds:.1f} s"
    print("errors while decode is down:", [(r.status, round(r.seconds, 3)) for r in errors])
    deadline = time.monotonic() + 1500
    while len(container.ready_times) <= readies:
        assert time.monotonic() < deadline, "the decode engine did not come back"
        time.sleep(1)
    assert container.restarts == restarts + 1
    ready_at = container.ready_times[-1]
    while True:
        reply = request(deployed.pd.endpoint, deployed.pd.model, PROMPTS[0], max_tokens=4, timeout=120)
        if reply.status == 200:
            break
        assert time.monotonic() - ready_at < RECOVERY_BOUND_S, (
            f"still failing {RECOVERY_BOUND_S:g} s after Ready: {reply}"
        )
        time.sleep(1)
    recovered = time.monotonic() - ready_at
    print(
        f"decode restarted: Ready after {ready_at - (container.started_at or 0):.0f} s; "
        f"requests succeed {recovered:.1f} s after Ready"
    )
    before = engine_metrics(decode)
    assert request(deployed.pd.endpoint, deployed.pd.model, PROMPTS[2], max_tokens=8).status == 200
    assert metric_sum(engine_metrics(decode), NIXL_COUNT) > metric_sum(before, NIXL_COUNT)
