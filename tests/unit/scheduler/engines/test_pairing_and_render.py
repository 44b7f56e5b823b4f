"""Which pools an engine can hand KV between (and how), and the container arguments it renders."""

from __future__ import annotations

import json

import pytest
from hetsched.scheduler.catalog.hardware_catalog import get_hardware
from hetsched.scheduler.engines.pairing import kv_path, staged_bandwidth, tp_allowed
from hetsched.scheduler.engines.platform import ServingChoice, platform_of
from hetsched.scheduler.engines.registry import get_engine
from hetsched.scheduler.engines.render import (
    ContainerInput,
    PhaseTarget,
    cpu_memory,
    engine_container,
    render_args,
    router_container,
)
from hetsched.scheduler.units import GIB

P = {
    name: platform_of(get_hardware(name))
    for name in ("h100-sxm", "a100-80gb", "l4", "t4", "mi300x", "xeon-6980p")
}
VLLM = ServingChoice()
SGLANG = ServingChoice(engine="sglang")


@pytest.mark.parametrize(
    ("prefill", "decode", "ok", "staged"),
    [
        ("h100-sxm", "h100-sxm", True, False),  # one pool: device to device
        ("l4", "t4", True, True),  # two NVIDIA generations: through host memory
        ("a100-80gb", "mi300x", True, True),  # two vendors: through host memory
        ("xeon-6980p", "xeon-6980p", True, True),  # CPU engines: KV lives in host memory
        ("xeon-6980p", "l4", False, False),  # CPU↔GPU: experimental, off by default
        ("l4", "xeon-6980p", False, False),
    ],
)
def test_vllm_nixl_pairs(prefill: str, decode: str, ok: bool, staged: bool) -> None:
    path = kv_path(VLLM, P[prefill], P[decode])
    assert (path.ok, path.staged) == (ok, staged), path.detail
    assert path.detail


def test_experimental_pairs_only_when_the_workload_opts_in() -> None:
    off = kv_path(VLLM, P["xeon-6980p"], P["l4"])
    assert not off.ok and off.experimental and "allowExperimentalPairs" in off.detail
    on = kv_path(ServingChoice(experimental_pairs=True), P["xeon-6980p"], P["l4"])
    assert on.ok and on.staged and on.experimental


def test_sglang_needs_one_vendor_and_no_cpu() -> None:
    assert kv_path(SGLANG, P["h100-sxm"], P["a100-80gb"]).ok  # RDMA between generations: no staging
    assert not kv_path(SGLANG, P["h100-sxm"], P["a100-80gb"]).staged
    cross = kv_path(SGLANG, P["a100-80gb"], P["mi300x"])
    assert not cross.ok and "device memory to device memory only" in cross.detail
    assert not kv_path(SGLANG, P["xeon-6980p"], P["xeon-6980p"]).ok
    assert not kv_path(ServingChoice(engine="trtllm"), P["l4"], P["l4"]).ok


def test_tp_rules_of_the_connectors() -> None:
    assert tp_allowed(VLLM, 1, 2)[0] and not tp_allowed(VLLM, 4, 2)[0]
    _, why = tp_allowed(VLLM, 4, 2)
    assert "decode TP ≥ prefill TP (prefill TP 4, decode TP 2)" in why
    mooncake = ServingChoice(connector="mooncake")
    assert tp_allowed(mooncake, 2, 2)[0] and not tp_allowed(mooncake, 1, 2)[0]
    assert not tp_allowed(SGLANG, 1, 2)[0]


def test_staged_bandwidth_adds_the_host_links_in_series() -> None:
    # L4 (PCIe Gen4, 32 GB/s) → 25 GB/s network → T4 (PCIe Gen3, 16 GB/s).
    bw = staged_bandwidth(25e9, P["l4"], P["t4"])
    assert bw == pytest.approx(1 / (1 / 32e9 + 1 / 25e9 + 1 / 16e9))
    # A CPU side has no copy: its memory is the host's.
    assert staged_bandwidth(25e9, P["xeon-6980p"], P["xeon-6980p"]) == pytest.approx(25e9)


def test_render_args_placeholders_lists_and_dropped_pd_flags() -> None:
    values = {"a": 1, "sel": ["x=1", "y=2"], "pd": None}
    assert render_args(["--a", "{a}", "--s", "{sel}", "--kv", "{pd}", "{{lit}}"], values) == [
        "--a",
        "1",
        "--s",
        "x=1",
        "y=2",
        "{lit}",
    ]
    with pytest.raises(
        ValueError, match=r"args\[0\] '--sel=\{sel\}': \{sel\} must be an argument of its own"
    ):
        render_args(["--sel={sel}"], values)
    with pytest.raises(ValueError, match=r"unknown placeholder \{b\} \(known: \{a\}, \{sel\}, \{pd\}\)"):
        render_args(["{b}"], values)


def test_cpu_memory_is_weights_kv_overhead_and_shm() -> None:
    target = PhaseTarget("decode", "cpu", P["xeon-6980p"], 1, 16, 8192, 20 * GIB, 0.75 * GIB, 256)
    memory, kv_gib, shm = cpu_memory(target)
    assert kv_gib == 12  # 16 × 0.75 GiB
    assert shm == 2 * GIB
    assert memory == (20 + 12 + 4 + 2 + 2) * GIB  # weights + KV + 4 GiB + 10 % of weights + /dev/shm
    tiny = PhaseTarget("decode", "cpu", P["xeon-6980p"], 1, 1, 128, 0.1 * GIB, 1e6, 256)
    assert cpu_memory(tiny)[1] == 1  # at least 1 GiB of KV cache


def test_engine_container_for_a_cpu_prefill_with_nixl() -> None:
    path = kv_path(VLLM, P["xeon-6980p"], P["xeon-6980p"])
    target = PhaseTarget("prefill", "cpu", P["xeon-6980p"], 1, 8, 4096, 16e9, 0.5 * GIB, 64)
    c = engine_container(
        choice=VLLM,
        target=target,
        given=ContainerInput(),
        model="/models/tiny",
        served_model_name="tiny",
        path=path,
    )
    assert c.image == "vllm/vllm-openai-cpu:v0.32.0"
    assert c.command == ("python3", "-m", "vllm.entrypoints.openai.api_server")
    config = json.loads(c.args[c.args.index("--kv-transfer-config") + 1])
    assert config == {"kv_connector": "NixlConnector", "kv_role": "kv_producer", "kv_buffer_device": "cpu"}
    assert c.args[c.args.index("--model") + 1] == "/models/tiny"
    assert c.args[c.args.index("--served-model-name") + 1] == "tiny"
    env = dict(c.env)
    assert env["VLLM_NIXL_SIDE_CHANNEL_HOST"] == "$(POD_IP)" and env["VLLM_CPU_KVCACHE_SPACE"] == "4"
    assert c.cpu == 62 and c.devices == 0 and c.device_resource is None
    assert c.field_env == (("POD_IP", "status.podIP"),)


def test_router_container_renders_discovery_by_labels() -> None:
    rc = router_container(
        get_engine("vllm"),
        VLLM,
        namespace="team-a",
        prefill_selector={"w": "chat", "p": "prefill"},
        decode_selector={"w": "chat", "p": "decode"},
        engine_port=9000,
    )
    assert rc.command == ("vllm-router",) and rc.port == 8080
    i = rc.args.index("--prefill-selector")
    assert rc.args[i + 1 : i + 3] == ("p=prefill", "w=chat")
    assert rc.args[rc.args.index("--service-discovery-port") + 1] == "9000"
