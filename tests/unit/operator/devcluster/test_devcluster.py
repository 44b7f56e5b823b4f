"""Pure parts of the local cluster: pins and cache key, pools file checks, Node manifests, certs."""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import ipaddress
import json
import os
import re
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from hetsched.operator import cli as top_cli
from hetsched.operator.devcluster import build, certs
from hetsched.operator.devcluster import cli as devcluster_cli
from hetsched.operator.devcluster.cluster import Cluster, default_state_dir
from hetsched.operator.devcluster.components import (
    ClusterConfig,
    Ports,
    scheduler_args,
    scheduler_configuration,
)
from hetsched.operator.devcluster.nodes import (
    load_pools,
    node_list,
    node_manifest,
    node_manifests,
    parse_pools,
    price_label_value,
)
from hetsched.operator.devcluster.processes import ProcessRecord
from hetsched.scheduler.catalog.hardware_catalog import get_hardware
from hetsched.scheduler.nodes import group_pools, project_node
from hetsched.scheduler.pools import DEVICES_LABEL, PRICE_LABEL
from support import REPO

DEMO = REPO / "examples" / "pools" / "demo.yaml"

PINS = build.Pins(
    kubernetes="v1.36.3", kubernetes_staging="v0.36.3", etcd="v3.6.6", kwok="v0.7.0", helm="v3.19.2"
)


def gpu_pool(**overrides: Any) -> dict[str, Any]:
    pool = {
        "name": "l4",
        "hardware": "l4",
        "nodes": 2,
        "devicesPerNode": 4,
        "nodeCpu": "96",
        "nodeMemory": "384Gi",
        "gpuProduct": "NVIDIA-L4",
        "gpuMemoryMiB": 23034,
        "taints": [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}],
    }
    pool.update(overrides)
    return pool


# -- pins and cache key ----------------------------------------------------------------------


def test_versions_file_holds_the_pins() -> None:
    assert build.load_pins() == PINS


def test_cache_key_is_stable_and_changes_with_any_pin() -> None:
    key = build.cache_key(PINS, "linux", "amd64")
    assert key == build.cache_key(PINS, "linux", "amd64")
    assert key.startswith("v1.36.3-")
    others = {
        build.cache_key(build.Pins(**{**PINS.__dict__, field: "v9.9.9"}), "linux", "amd64")
        for field in PINS.__dict__
    }
    assert key not in others and len(others) == len(PINS.__dict__)
    assert build.cache_key(PINS, "linux", "arm64") != key


def test_cache_dir_override(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HETSCHED_CACHE_DIR", str(tmp_path))
    assert build.bin_dir(PINS) == tmp_path / "bin" / build.cache_key(PINS)
    assert not build.is_built(build.bin_dir(PINS))


def test_is_built_needs_manifest_and_every_binary(tmp_path: Path) -> None:
    for name in build.BINARIES:
        (tmp_path / name).write_text("#!/bin/sh\n")
        (tmp_path / name).chmod(0o755)
    assert not build.is_built(tmp_path)  # an interrupted build has no manifest
    (tmp_path / build.MANIFEST).write_text("{}")
    assert build.is_built(tmp_path)
    (tmp_path / "helm").unlink()
    assert not build.is_built(tmp_path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("kubernetes: {version: v1.36.3}\n", "kubernetes.stagingVersion"),
        ("kubernetes: {version: 1.36, stagingVersion: v0.36.3}\n", "kubernetes.version"),
        ("- a\n", "mapping"),
    ],
)
def test_bad_versions_file(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "versions.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        build.load_pins(path)


def test_kubernetes_wrapper_replaces_every_staging_module() -> None:
    upstream = (
        "module k8s.io/kubernetes\n\ngo 1.26.0\n\nrequire (\n\tk8s.io/api v0.0.0\n)\n\nreplace (\n"
        "\tk8s.io/api => ./staging/src/k8s.io/api\n"
        "\tk8s.io/client-go => ./staging/src/k8s.io/client-go\n"
        "\tgithub.com/x/y => github.com/x/y v1.0.0\n)\n"
    )
    go_mod = build.kubernetes_wrapper_go_mod(upstream, PINS)
    assert "go 1.26.0" in go_mod
    assert "require k8s.io/kubernetes v1.36.3" in go_mod
    assert "\tk8s.io/api => k8s.io/api v0.36.3" in go_mod
    assert "\tk8s.io/client-go => k8s.io/client-go v0.36.3" in go_mod
    assert "github.com/x/y" not in go_mod
    with pytest.raises(build.BuildError):
        build.kubernetes_wrapper_go_mod("module k8s.io/kubernetes\n", PINS)


def test_version_ldflags() -> None:
    flags = build.kubernetes_ldflags(PINS, commit="abc", build_date="2026-07-22T18:07:38Z")
    for package in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        assert f"-X {package}.gitVersion=v1.36.3" in flags
        assert f"-X {package}.gitMajor=1" in flags
        assert f"-X {package}.gitMinor=36" in flags
        assert f"-X {package}.gitCommit=abc" in flags
    helm = build.helm_ldflags("v3.19.2", "v0.34.0")
    assert "-X helm.sh/helm/v3/internal/version.version=v3.19.2" in helm
    assert "-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=34" in helm
    assert "-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1" in helm


# -- pools file ------------------------------------------------------------------------------


def test_demo_pools_cover_the_heterogeneous_fleet() -> None:
    pools = load_pools(DEMO)
    products = {p.gpu_product for p in pools.pools}
    assert {"NVIDIA-H100-80GB-HBM3", "NVIDIA-A100-SXM4-80GB", "NVIDIA-L4", "Tesla-T4", None} <= products
    by_name = {p.name: p for p in pools.pools}
    assert by_name["h100"].devices_per_node == 8 and by_name["a100"].devices_per_node == 8
    assert by_name["l4"].devices_per_node == 4 and by_name["t4"].devices_per_node == 4
    assert sum(p.nodes for p in pools.pools) <= 12  # the demo must stay light
    assert pools.network_bandwidth_gbps["default"] > 0


def test_demo_pools_match_the_hardware_catalog() -> None:
    """The demo's hardware keys resolve and its GFD product labels are the catalog's."""
    for pool in load_pools(DEMO).pools:
        spec = get_hardware(pool.hardware)
        if pool.gpu_product is not None:
            assert pool.gpu_product in spec.gfd_products, pool.name
            assert pool.gpu_memory_mib is not None
            assert pool.gpu_memory_mib * 2**20 <= spec.memory_bytes * 1.1, pool.name
        else:
            assert spec.kind == "cpu", pool.name


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d["pools"][0].pop("hardware"), r"pools\.0\.hardware"),
        (lambda d: d["pools"][0].update(devicesPerNode=0), r"pools\.0\.devicesPerNode"),
        (lambda d: d["pools"][0].update(nodes=-1), r"pools\.0\.nodes"),
        (lambda d: d["pools"][0].update(name="L4_pool"), r"pools\.0\.name"),
        (lambda d: d["pools"][0].update(devicePerNode=4), r"pools\.0\.devicePerNode"),  # typo
        (lambda d: d["pools"][0].update(nodeMemory="lots"), r"pools\.0 \(l4\)\.nodeMemory"),
        (lambda d: d["pools"][0].update(nodeCpu="9x"), r"pools\.0 \(l4\)\.nodeCpu"),
        (lambda d: d["pools"][0].update(gpuProduct=None), r"pools\.0 \(l4\)\.gpuMemoryMiB"),
        (lambda d: d["pools"][0]["taints"][0].update(effect="Never"), r"pools\.0\.taints\.0\.effect"),
        (lambda d: d["pools"].append(gpu_pool()), "duplicate pool names"),
        (lambda d: d.update(pools=[]), "pools"),
        (lambda d: d.update(extra=1), "extra"),
    ],
)
def test_pools_errors_name_the_field(mutate: Any, message: str) -> None:
    data: dict[str, Any] = {"pools": [gpu_pool()]}
    mutate(data)
    with pytest.raises(ValueError, match=message):
        parse_pools(data, "test.yaml")


def test_parse_does_not_modify_its_input() -> None:
    data = {"pools": [gpu_pool()], "networkBandwidthGBps": {"default": 50}}
    before = copy.deepcopy(data)
    parse_pools(data)
    assert data == before


def test_invalid_yaml_is_a_value_error(tmp_path: Path) -> None:
    path = tmp_path / "pools.yaml"
    path.write_text("pools: [\n")
    with pytest.raises(ValueError, match="not valid YAML"):
        load_pools(path)


# -- node manifests --------------------------------------------------------------------------


def test_gpu_node_manifest() -> None:
    pool = parse_pools({"pools": [gpu_pool(labels={"zone": "a"})]}).pools[0]
    node = node_manifest(pool, 1)
    meta = node["metadata"]
    assert meta["name"] == "l4-1"
    assert meta["annotations"]["kwok.x-k8s.io/node"] == "fake"
    expected_labels = {
        "hetsched.io/pool": "l4",
        "kubernetes.io/hostname": "l4-1",
        "type": "kwok",
        "nvidia.com/gpu.product": "NVIDIA-L4",
        "nvidia.com/gpu.memory": "23034",
        "nvidia.com/gpu.count": "4",
        "zone": "a",
    }
    assert expected_labels.items() <= meta["labels"].items()
    expected_resources = {"nvidia.com/gpu": "4", "cpu": "96", "memory": "384Gi", "pods": "110"}
    for key in ("capacity", "allocatable"):
        assert expected_resources.items() <= node["status"][key].items()
    assert node["spec"]["taints"] == [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}]
    assert all(isinstance(v, str) for v in meta["labels"].values())


def test_cpu_node_manifest_has_no_gpu() -> None:
    data = {
        "pools": [
            {
                "name": "cpu",
                "hardware": "xeon",
                "nodes": 1,
                "devicesPerNode": 2,
                "nodeCpu": "512",
                "nodeMemory": "1Ti",
            }
        ]
    }
    node = node_manifest(parse_pools(data).pools[0], 0)
    assert "nvidia.com/gpu" not in node["status"]["allocatable"]
    assert not any(k.startswith("nvidia.com/") for k in node["metadata"]["labels"])
    assert "taints" not in node["spec"]


def test_price_and_devices_labels() -> None:
    """pricePerDeviceHour → hetsched.io/price-per-device-hour on every node of the pool (GPU or
    CPU); CPU pools → hetsched.io/devices-per-node (sockets); GPU pools count nvidia.com/gpu."""
    gpu = parse_pools({"pools": [gpu_pool(pricePerDeviceHour=4.25)]}).pools[0]
    labels = node_manifest(gpu, 0)["metadata"]["labels"]
    assert labels[PRICE_LABEL] == "4.25"
    assert DEVICES_LABEL not in labels
    no_price = node_manifest(parse_pools({"pools": [gpu_pool()]}).pools[0], 0)["metadata"]["labels"]
    assert PRICE_LABEL not in no_price
    cpu_entry = {"name": "cpu", "hardware": "xeon-6980p", "nodes": 2, "devicesPerNode": 2}
    cpu = parse_pools({"pools": [{**cpu_entry, "pricePerDeviceHour": 3}]}).pools[0]
    for i in range(2):
        labels = node_manifest(cpu, i)["metadata"]["labels"]
        assert labels[DEVICES_LABEL] == "2" and labels[PRICE_LABEL] == "3"
    no_price_cpu = node_manifest(parse_pools({"pools": [cpu_entry]}).pools[0], 0)["metadata"]["labels"]
    assert no_price_cpu[DEVICES_LABEL] == "2" and PRICE_LABEL not in no_price_cpu


@pytest.mark.parametrize(
    ("price", "label"),
    [(4.25, "4.25"), (2.21, "2.21"), (3.0, "3"), (0.0, "0"), (1e-05, "0.00001"), (1e20, "1" + "0" * 20)],
)
def test_price_label_value_is_a_valid_label_that_parses_back(price: float, label: str) -> None:
    assert price_label_value(price) == label
    assert re.fullmatch(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?", label)
    assert float(label) == price


@pytest.mark.parametrize("price", [float("inf"), 1e70])
def test_unlabelable_price_is_an_error(price: float) -> None:
    with pytest.raises(ValueError, match=r"pools\.0 \(l4\)\.pricePerDeviceHour"):
        parse_pools({"pools": [gpu_pool(pricePerDeviceHour=price)]}, "test.yaml")


def test_operator_reads_the_demo_nodes_price_and_devices() -> None:
    """The operator's node projection of the local cluster's nodes: the pool file's prices and the
    CPU pool's sockets per node come back."""
    pools = load_pools(DEMO)
    projections = []
    for node in node_manifests(pools):
        node["status"]["conditions"] = [{"type": "Ready", "status": "True"}]
        proj = project_node(
            node["metadata"]["name"], node["metadata"]["labels"], node["spec"], node["status"]
        )
        assert proj is not None
        projections.append(proj)
    live = {p.name: p for p in group_pools(projections)}
    for entry in pools.pools:
        pool = live[entry.name]
        assert pool.price_label == entry.price_per_device_hour, entry.name
        assert pool.devices_per_node == entry.devices_per_node, entry.name
        assert pool.devices == entry.nodes * entry.devices_per_node, entry.name
    assert live["h100"].price_label == 4.25 and live["l4"].price_label is None
    assert not live["cpu-amx"].gpu and live["cpu-amx"].devices_per_node == 2


def test_node_list_names_every_node_once() -> None:
    pools = load_pools(DEMO)
    names = [n["metadata"]["name"] for n in node_list(pools)["items"]]
    assert len(names) == len(set(names)) == sum(p.nodes for p in pools.pools)
    assert "h100-0" in names and "t4-1" in names
    assert node_manifests(parse_pools({"pools": [gpu_pool(nodes=0)]})) == []


# -- certificates ----------------------------------------------------------------------------


def test_pki(tmp_path: Path) -> None:
    pki = certs.write_pki(tmp_path, "10.96.0.1")
    ca = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    server = x509.load_pem_x509_certificate(pki.apiserver_cert.read_bytes())
    server.verify_directly_issued_by(ca)
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.ip_address("127.0.0.1") in sans.get_values_for_type(x509.IPAddress)
    assert ipaddress.ip_address("10.96.0.1") in sans.get_values_for_type(x509.IPAddress)
    assert "kubernetes.default.svc" in sans.get_values_for_type(x509.DNSName)
    admin = x509.load_pem_x509_certificate(pki.client_cert("admin").read_bytes())
    admin.verify_directly_issued_by(ca)
    assert admin.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "system:masters"
    usage = admin.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.CLIENT_AUTH in usage
    assert admin.not_valid_after_utc > dt.datetime.now(dt.UTC) + dt.timedelta(days=300)
    assert pki.client_key("admin").stat().st_mode & 0o077 == 0  # private keys are private
    assert b"PUBLIC KEY" in pki.service_account_pub.read_bytes()


# -- cluster bookkeeping (no processes) ------------------------------------------------------


def test_state_dir_override(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HETSCHED_CLUSTER_DIR", str(tmp_path / "c"))
    assert default_state_dir() == tmp_path / "c"
    monkeypatch.delenv("HETSCHED_CLUSTER_DIR")
    assert default_state_dir().parts[-2:] == ("hetsched", "cluster")


def test_status_of_missing_cluster(tmp_path: Path) -> None:
    status = Cluster(tmp_path / "none").status()
    assert not status.exists and not status.all_running
    assert Cluster(tmp_path / "none", log=lambda _: None).down() == []


def test_stale_pid_record_is_not_alive() -> None:
    me = ProcessRecord(name="x", pid=os.getpid(), exe="/nonexistent", start_time=0, port=1)
    assert not me.is_alive()  # our own PID, but a different start time and executable
    gone = ProcessRecord(name="x", pid=2**22 + 1, exe="/bin/true", start_time=0, port=1)
    assert not gone.is_alive()


def test_cluster_config_round_trip() -> None:
    config = ClusterConfig(bin_dir="/b", ports=Ports(1, 2, 3, 4, 5, 6))
    assert ClusterConfig.from_json(json.dumps(asdict(config))) == config


def test_scheduler_configuration_packs_gpus(tmp_path: Path) -> None:
    doc = scheduler_configuration(tmp_path / "sched.kubeconfig")
    assert doc["apiVersion"] == "kubescheduler.config.k8s.io/v1"
    assert doc["kind"] == "KubeSchedulerConfiguration"
    assert doc["clientConnection"] == {"kubeconfig": str(tmp_path / "sched.kubeconfig")}
    assert doc["leaderElection"] == {"leaderElect": False}
    (profile,) = doc["profiles"]
    assert profile["schedulerName"] == "default-scheduler"
    args = {p["name"]: p["args"] for p in profile["pluginConfig"]}
    assert args["NodeResourcesFit"]["scoringStrategy"] == {
        "type": "MostAllocated",
        "resources": [
            {"name": "nvidia.com/gpu", "weight": 10},
            {"name": "cpu", "weight": 1},
            {"name": "memory", "weight": 1},
        ],
    }
    assert args["PodTopologySpread"] == {"defaultingType": "List"}


def test_scheduler_is_started_with_the_config_file(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path / "state", log=lambda _: None)
    kubeconfig = cluster._component_kubeconfig("kube-scheduler")
    args = scheduler_args(Ports(1, 2, 3, 4, 5, 6), cluster.scheduler_config_path, kubeconfig)
    assert f"--config={tmp_path / 'state' / 'kube-scheduler.yaml'}" in args
    assert "--leader-elect=false" in args and "--secure-port=5" in args
    assert not any(a.startswith("--kubeconfig=") for a in args)  # ignored with --config: in the file
    (tmp_path / "state").mkdir()
    cluster._write_scheduler_config()
    written = yaml.safe_load(cluster.scheduler_config_path.read_text())
    assert written == scheduler_configuration(
        tmp_path / "state" / "kubeconfigs" / "kube-scheduler.kubeconfig"
    )


def test_cli_registers_cluster_commands() -> None:
    assert "hetsched.operator.devcluster.cli" in top_cli.SUBCOMMAND_MODULES
    parser = argparse.ArgumentParser(prog="hetsched")
    devcluster_cli.register(parser.add_subparsers(dest="command", required=True))
    for action in ("build", "up", "down", "status", "env"):
        args = parser.parse_args(["cluster", action])
        assert callable(args.func)
    args = parser.parse_args(["cluster", "nodes", "apply", "--pools", str(DEMO)])
    assert args.action == "apply"
    args = parser.parse_args(["cluster", "nodes", "lose", "l4-0", "l4-1"])
    assert args.names == ["l4-0", "l4-1"] and callable(args.func)
    assert yaml.safe_load(DEMO.read_text())["pools"]
