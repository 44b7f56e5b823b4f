"""``hetsched hardware probe``: cpuinfo and cgroup parsing (fixtures), the peak derivation, the
STREAM-like test, and that the probed entry loads and drives the estimator."""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

import pytest
import yaml
from hetsched.operator.cli import main as hetsched_main
from hetsched.scheduler.catalog import probe
from hetsched.scheduler.catalog.hardware import DeviceKind
from hetsched.scheduler.catalog.hardware_catalog import load_hardware_yaml
from hetsched.scheduler.estimator import efficiency

ZEN1 = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 23
model\t\t: 1
model name\t: AMD EPYC
stepping\t: 2
cpu MHz\t\t: 1996.250
cache size\t: 512 KB
physical id\t: 0
siblings\t: 2
core id\t\t: 0
cpu cores\t: 2
flags\t\t: fpu sse sse2 avx f16c fma avx2 bmi2

processor\t: 1
vendor_id\t: AuthenticAMD
cpu family\t: 23
model\t\t: 1
model name\t: AMD EPYC
cpu MHz\t\t: 1996.250
physical id\t: 0
siblings\t: 2
core id\t\t: 1
cpu cores\t: 2
flags\t\t: fpu sse sse2 avx f16c fma avx2 bmi2
"""


def intel(sockets: int = 2, cores: int = 4, smt: int = 2, flags: str = "") -> str:
    """A synthetic Granite Rapids-like cpuinfo: ``sockets`` × ``cores`` × ``smt`` processors."""
    blocks = []
    n = 0
    for s in range(sockets):
        for c in range(cores):
            for _ in range(smt):
                blocks.append(
                    f"processor\t: {n}\nvendor_id\t: GenuineIntel\ncpu family\t: 6\nmodel\t\t: 173\n"
                    f"model name\t: Intel(R) Xeon(R) 6980P @ 2.00GHz\ncpu MHz\t\t: 3200.000\n"
                    f"physical id\t: {s}\nsiblings\t: {cores * smt}\ncore id\t\t: {c}\ncpu cores\t: {cores}\n"
                    f"flags\t\t: fpu avx2 fma avx512f avx512_bf16 avx512_vnni amx_bf16 amx_int8 amx_tile {flags}\n"
                )
                n += 1
    return "\n".join(blocks)


def test_parse_cpuinfo_amd_zen1() -> None:
    info = probe.parse_cpuinfo(ZEN1)
    assert (info.vendor, info.family, info.model) == ("AuthenticAMD", 23, 1)
    assert info.logical_cpus == 2 and info.sockets == 1 and info.cores_per_socket == 2
    assert info.threads_per_core == 1 and info.mhz == pytest.approx(1996.25)
    assert {"avx2", "fma"} <= info.flags and "avx512f" not in info.flags
    arch, how, units = probe.compute_units(info)
    assert arch == "zen" and "family 23" in how
    # Zen/Zen+: two 128-bit FMA pipes → 16 FP32 FLOP/cycle (not Zen 2's 32); no BF16 unit.
    assert [(u.compute_class, u.per_cycle) for u in units] == [("fp32", 16)]
    assert probe.isa_features(info.flags) == ["avx2", "fma", "f16c"]


def test_zen_generations_by_family_and_model() -> None:
    def arch(family: int, model: int, flags: str = "avx2 fma") -> str:
        text = ZEN1.replace("cpu family\t: 23", f"cpu family\t: {family}").replace(
            "model\t\t: 1", f"model\t\t: {model}"
        )
        text = text.replace("fpu sse sse2 avx f16c fma avx2 bmi2", flags)
        return probe.microarchitecture(probe.parse_cpuinfo(text))[0]

    assert arch(23, 0x08) == "zen"  # Zen+ (Pinnacle Ridge)
    assert arch(23, 0x31) == "zen2"  # Rome
    assert arch(25, 0x01) == "zen3"  # Milan
    assert arch(25, 0x11, "avx2 fma avx512f avx512_bf16") == "zen4"  # Genoa
    assert arch(26, 0x02, "avx2 fma avx512f") == "zen5"


def test_intel_amx_peaks_and_topology(tmp_path: Path) -> None:
    info = probe.parse_cpuinfo(intel())
    assert info.sockets == 2 and info.cores_per_socket == 4 and info.threads_per_core == 2
    assert info.logical_cpus == 16
    arch, _, units = probe.compute_units(info)
    assert arch == "intel-amx"
    per = {u.compute_class: u.per_cycle for u in units}
    assert per == {"fp32": 64, "bf16": 1024, "int8": 2048}
    ghz, where = probe.base_clock_ghz(info, None)
    assert ghz == pytest.approx(2.0) and "model name" in where  # not the 3.2 GHz of cpu MHz
    ghz, where = probe.base_clock_ghz(info, "2100000")
    assert ghz == pytest.approx(2.1) and "sysfs" in where
    peaks = probe.derive_peaks(units, cores=128, ghz=2.0)
    # The catalog's xeon-6980p: 128 cores × 2.0 GHz × 1024 = 262.1 TFLOP/s BF16.
    assert peaks.flops["bf16"] == pytest.approx(262.144e12)
    assert peaks.flops["int8"] == pytest.approx(524.288e12)
    assert peaks.flops["fp32"] == pytest.approx(16.384e12)
    assert any("AMX" in line for line in peaks.derivation)


def test_bf16_without_bf16_units_runs_at_the_fp32_rate() -> None:
    peaks = probe.derive_peaks([probe.Unit("fp32", 16, "x")], cores=2, ghz=2.0)
    assert peaks.flops == {"fp32": 64e9, "bf16": 64e9}
    assert "converted to FP32" in peaks.derivation[-1]


def _cgroup_tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_cgroup_v2_quota_and_memory(tmp_path: Path) -> None:
    root = _cgroup_tree(
        tmp_path,
        {
            "kubepods/pod1/ctr/cpu.max": "250000 100000\n",
            "kubepods/pod1/ctr/memory.max": f"{8 * 2**30}\n",
            "kubepods/cpu.max": "max 100000\n",
        },
    )
    assert probe.cgroup_cpu_limit(root, "0::/kubepods/pod1/ctr\n") == pytest.approx(2.5)
    assert probe.cgroup_memory_limit(root, "0::/kubepods/pod1/ctr\n") == 8 * 2**30
    # Inside the container the cgroup is mounted at the root: its own files there.
    inside = _cgroup_tree(tmp_path / "inside", {"cpu.max": "400000 100000\n", "memory.max": "max\n"})
    assert probe.cgroup_cpu_limit(inside, "0::/\n") == pytest.approx(4.0)
    assert probe.cgroup_memory_limit(inside, "0::/\n") is None


def test_cgroup_v1_quota_and_unlimited_memory(tmp_path: Path) -> None:
    root = _cgroup_tree(
        tmp_path,
        {
            "cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "150000\n",
            "cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000\n",
            "memory/docker/abc/memory.limit_in_bytes": "9223372036854771712\n",
        },
    )
    cgroup = "4:memory:/docker/abc\n3:cpu,cpuacct:/docker/abc\n0::/\n"
    assert probe.cgroup_cpu_limit(root, cgroup) == pytest.approx(1.5)
    assert probe.cgroup_memory_limit(root, cgroup) is None  # v1's "no limit" sentinel
    (root / "memory/docker/abc/memory.limit_in_bytes").write_text("1073741824\n")
    assert probe.cgroup_memory_limit(root, cgroup) == 2**30
    # A quota of -1 is unlimited.
    (root / "cpu,cpuacct/docker/abc/cpu.cfs_quota_us").write_text("-1\n")
    assert probe.cgroup_cpu_limit(root, cgroup) is None


def fake_measure(
    threads: int, array_bytes: int, repetitions: int, cpus: list[int] | None
) -> probe.BandwidthResult:
    """A stand-in for the bandwidth test: 10 GB/s Add per thread."""
    return probe.BandwidthResult(
        threads=threads,
        elements_per_array=array_bytes // 8,
        repetitions=repetitions,
        best={"copy": 8e9 * threads, "scale": 8e9 * threads, "add": 10e9 * threads},
        median={"copy": 7e9 * threads, "scale": 7e9 * threads, "add": 9e9 * threads},
        pinned=cpus is not None,
    )


def sources(tmp_path: Path, cpuinfo: str, affinity: set[int], cgroup: dict[str, str]) -> probe.Sources:
    root = _cgroup_tree(tmp_path / "cg", cgroup) if cgroup else tmp_path / "cg"
    root.mkdir(parents=True, exist_ok=True)
    return probe.Sources(
        cpuinfo=cpuinfo,
        meminfo="MemTotal:       24683784 kB\nMemFree: 1 kB\n",
        proc_self_cgroup="0::/\n",
        cgroup_root=root,
        affinity=frozenset(affinity),
        llc_bytes=8 * 2**20,
        load_average=(0.5, 0.4, 0.3),
    )


def test_probe_in_a_container_counts_the_quota_and_the_memory_limit(tmp_path: Path) -> None:
    """Host: 2 sockets × 4 cores × 2 threads; the container may use CPUs 0–5 but a quota of 2 CPUs
    and 16 GiB: one socket's entry with 1 physical core (2 CPUs / 2 threads per core)."""
    src = sources(
        tmp_path, intel(), set(range(6)), {"cpu.max": "200000 100000\n", "memory.max": f"{16 * 2**30}\n"}
    )
    doc = probe.probe(src=src, measure=fake_measure, today=dt.date(2026, 12, 5))
    entry, details = doc["hardware"][0], doc["probe"]
    assert details["available"]["cores"] == pytest.approx(1.0)
    assert details["available"]["sockets"] == 1
    assert details["bandwidth_test"]["threads"] == 2  # one per allowed CPU of the quota
    assert entry["memory"] == "16GiB"
    assert entry["peakTflops"]["bf16"] == pytest.approx(1 * 2.0e9 * 1024 / 1e12)
    assert entry["name"] == "cpu-intel-intel-amx-1c"
    assert "cgroup CPU quota 2 CPU(s)" in entry["source"]
    [hw] = load_hardware_yaml(probe.render_yaml(doc))
    assert hw.kind is DeviceKind.CPU and hw.memory_bytes == 16 * 2**30
    assert hw.memory_bandwidth == pytest.approx(20e9)  # the Add rate of 2 threads
    assert hw.price_per_hour == 0.0


def test_probe_of_this_machine_type_matches_the_derivation(tmp_path: Path) -> None:
    src = sources(tmp_path, ZEN1, {0, 1}, {})
    doc = probe.probe("mine", src=src, measure=fake_measure, today=dt.date(2026, 12, 5))
    entry = doc["hardware"][0]
    # 2 cores × 1.99625 GHz × 16 FLOP/cycle = 63.88 GFLOP/s.
    assert entry["peakTflops"] == {"bf16": pytest.approx(0.063880), "fp32": pytest.approx(0.063880)}
    assert entry["bandwidth"] == "20GB/s" and entry["name"] == "mine"
    assert "2 × 128-bit FMA pipes" in entry["source"] and "cpu MHz" in entry["source"]
    assert "load average 0.50" in entry["source"]
    [hw] = load_hardware_yaml(probe.render_yaml(doc))
    # A probed CPU entry gets the CPU family's calibrated efficiency (not the GPU fit, not ideal).
    assert efficiency.family_of(hw) == "cpu"
    assert hw.efficiency == efficiency.efficiency_for(hw)


def test_stream_like_kernels_measure_a_bandwidth() -> None:
    cpus = sorted(os.sched_getaffinity(0))[:2]
    r = probe.measure_bandwidth(threads=len(cpus), array_bytes=8 * 2**20, repetitions=2, cpus=cpus)
    assert set(r.best) == {"copy", "scale", "add"}
    assert all(1e8 < v < 1e13 for v in r.best.values())
    assert all(r.best[k] >= r.median[k] for k in r.best)
    assert r.bandwidth == r.best["add"] and r.pinned


def test_cli_probe_yaml_loads_and_estimates(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "me.yaml"
    code = hetsched_main(
        ["hardware", "probe", "--name", "me", "--repetitions", "1", "--array-mib", "8", "--out", str(out)]
    )
    assert code == 0
    doc = yaml.safe_load(out.read_text())
    assert doc["hardware"][0]["name"] == "me" and doc["probe"]["bandwidth_test"]["repetitions"] == 1
    capsys.readouterr()
    code = hetsched_main(
        ["estimate", "--hardware-file", str(out), "--hardware", "ME", "--model", "llama-3.1-8b", "-o", "json"]
    )
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["hardware"]["name"] == "me"
    assert hetsched_main(["hardware", "probe", "--repetitions", "1", "--array-mib", "8", "-o", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["hardware"][0]["kind"] == "cpu"
