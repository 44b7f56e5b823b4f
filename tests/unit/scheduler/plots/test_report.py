"""The HTML report and the placement figure: data from the planner, self-contained, renders in Chromium."""

from __future__ import annotations

import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from dataclasses import replace
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from hetsched.operator.cli import main
from hetsched.scheduler.placement import plan
from hetsched.scheduler.plots import report
from hetsched.scheduler.plots.placement import placement_series
from PIL import Image

POOLS = """
pools:
  - {name: h100, hardware: h100-sxm, nodes: 2, devicesPerNode: 8, pricePerDeviceHour: 4.25}
  - {name: a100, hardware: a100-80gb, nodes: 2, devicesPerNode: 8, freeDevices: 12, pricePerDeviceHour: 2.21}
  - {name: l4, hardware: l4, nodes: 2, devicesPerNode: 4}
  - {name: cpu-amx, hardware: xeon-6980p, nodes: 1, devicesPerNode: 2}
networkBandwidthGBps: {default: 25}
"""

WORKLOADS = """
apiVersion: hetsched.io/v1alpha1
kind: AgentWorkload
metadata: {name: chat-8b}
spec:
  model: {name: llama-3.1-8b}
  agent: {profile: chatbot}
  demand: {requestsPerSecond: 20}
  slo: {ttftSeconds: 1.0, tpotSeconds: 0.05}
---
apiVersion: hetsched.io/v1alpha1
kind: AgentWorkload
metadata: {name: coder-70b}
spec:
  model: {name: llama-3.1-70b}
  agent: {profile: coding}
  demand: {concurrentSessions: 32}
  slo: {ttftSeconds: 3.0, tpotSeconds: 0.08}
---
apiVersion: hetsched.io/v1alpha1
kind: AgentWorkload
metadata: {name: long-context}
spec:
  model: {name: deepseek-v3}
  agent: {profile: coding-long}
  demand: {requestsPerSecond: 5}
  slo: {ttftSeconds: 2.0, tpotSeconds: 0.02}
"""

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)


@pytest.fixture
def inputs(tmp_path: Path) -> tuple[Path, Path]:
    pools = tmp_path / "pools.yaml"
    pools.write_text(POOLS)
    workloads = tmp_path / "workloads.yaml"
    workloads.write_text(WORKLOADS)
    return pools, workloads


@pytest.fixture
def ctx(inputs: tuple[Path, Path]) -> report.PlanContext:
    pools, workloads = inputs
    return report.build_plan(pools, [workloads])


class _Collector(HTMLParser):
    """Collects tags and attributes, and checks that every opened element is closed."""

    VOID = frozenset({"meta", "img", "br", "link", "input", "hr", "col", "source"})

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        assert self.stack and self.stack[-1] == tag, (
            f"</{tag}> closes <{self.stack[-1] if self.stack else None}>"
        )
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse_html(text: str) -> _Collector:
    c = _Collector()
    c.feed(text)
    c.close()
    assert c.stack == [], f"unclosed elements: {c.stack}"
    return c


# ---- placement figure ---------------------------------------------------------------------------


def test_placement_series_is_the_plan(ctx: report.PlanContext) -> None:
    d = ctx.plan_dict
    series = placement_series(d, ctx.pool_rows)
    assert [c.pool for c in series.columns] == ["h100", "a100", "l4", "cpu-amx"]
    used = {p["name"]: p["used_devices"] for p in d["pools"]}
    for col in series.columns:
        assert col.used_devices == used[col.pool]
        assert col.free_devices_before == ctx.cluster.pool(col.pool).free_devices
        assert col.total_devices == ctx.cluster.pool(col.pool).total_devices
    assert series.total_cost_per_hour == pytest.approx(d["total_cost_per_hour"])
    placed = {s.workload for c in series.columns for s in c.segments}
    assert placed == {w["name"] for w in d["workloads"] if w["feasible"]}
    assert series.unplaced == ("long-context: context-limit",)  # 300K tokens: DeepSeek-V3 serves 163,840


def test_plot_placement_command(inputs: tuple[Path, Path], tmp_path: Path) -> None:
    pools, workloads = inputs
    out = tmp_path / "figs"
    assert main(["plot", "placement", "--pools", str(pools), str(workloads), "--out", str(out)]) == 0
    png = (out / "placement.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 5_000
    assert ET.parse(out / "placement.svg").getroot().tag.endswith("svg")


# ---- baselines ----------------------------------------------------------------------------------


def test_baselines_are_the_planner_on_one_pool(ctx: report.PlanContext) -> None:
    strategies = report.baselines(ctx)
    assert [s.name for s in strategies] == ["hetsched plan", "all on h100-sxm", "cheapest single pool"]
    keys = [w.key for w in ctx.plan.workloads]
    for s in strategies:
        assert [c.workload for c in s.costs] == keys
    newest = report.newest_gpu_pool(ctx.cluster)
    assert newest is not None and newest.name == "h100"
    # The newest-GPU baseline is exactly the planner on a cluster of (unlimited) H100s.
    only = replace(ctx.cluster, pools=(report.unlimited(newest),))
    direct = {w.key: w for w in plan(list(ctx.requests), only).workloads}
    for c in strategies[1].costs:
        w = direct[c.workload]
        assert c.cost_per_hour == (w.cost_per_hour if w.placed else None)
        assert c.where in ("h100", "—")
    plan_costs, _, single = strategies
    for p, b in zip(plan_costs.costs, single.costs, strict=True):
        if p.cost_per_hour is not None and b.cost_per_hour is not None:
            # No contention here: the plan's options include every single-pool placement.
            assert p.cost_per_hour <= b.cost_per_hour + 1e-9
    # The 671B model at a 300K-token context fits no single pool of this cluster either.
    assert all(s.costs[keys.index("default/long-context")].cost_per_hour is None for s in strategies[:2])
    series = report.cost_comparison_series(strategies)
    assert series.workloads == ("chat-8b", "coder-70b", "long-context")
    total = series.total(0)
    assert total == pytest.approx(sum(c.cost_per_hour or 0 for c in plan_costs.costs))
    assert series.total(1) is not None and series.total(1) >= total  # type: ignore[operator]


# ---- the HTML -----------------------------------------------------------------------------------


def test_report_command_writes_self_contained_html(inputs: tuple[Path, Path], tmp_path: Path) -> None:
    pools, workloads = inputs
    out = tmp_path / "out" / "report.html"
    assert (
        main(["report", str(workloads), "--pools", str(pools), "--out", str(out), "--title", "Q3 <plan>"])
        == 0
    )
    text = out.read_text(encoding="utf-8")
    doc = parse_html(text)
    tags = [t for t, _ in doc.tags]
    assert "script" not in tags and "link" not in tags and "iframe" not in tags
    imgs = [a for t, a in doc.tags if t == "img"]
    assert len(imgs) >= 2 + 3  # placement, cost comparison, one roofline per workload
    for a in imgs:
        assert (a.get("src") or "").startswith("data:image/png;base64,"), a.get("src", "")[:40]
        assert a.get("alt")
    assert not re.search(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""", text)
    assert "url(" not in text  # no CSS fetches
    assert "Content-Security-Policy" in text
    words = " ".join(doc.text)
    assert "Q3 <plan>" in words  # escaped in the file, text again once parsed
    for expected in (
        "chat-8b",
        "coder-70b",
        "long-context",
        "compute-bound",
        "bandwidth-bound",
        "all on h100-sxm",
        "cheapest single pool",
        "Pools not used, and why",
        "capacity",
    ):
        assert expected in words, expected


def test_report_renders_in_headless_chromium(ctx: report.PlanContext, tmp_path: Path) -> None:
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail(
            "Debian's chromium is not installed (apt-get install -y chromium): the report test needs it"
        )
    page = tmp_path / "report.html"
    page.write_text(report.render_report(ctx), encoding="utf-8")
    shot = tmp_path / "report.png"
    common = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
    run = subprocess.run(
        [
            *common,
            "--enable-logging=stderr",
            "--v=0",
            f"--screenshot={shot}",
            "--window-size=1280,2000",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    # Any console message (a blocked fetch, a script error) would be logged as CONSOLE.
    console = [line for line in run.stderr.splitlines() if ":CONSOLE" in line]
    assert console == [], console
    data = shot.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 50_000
    with Image.open(shot) as im:
        assert im.size == (1280, 2000)
        rgb = im.convert("RGB")
        colors = rgb.getcolors(maxcolors=1 << 20)
        assert colors is not None and len(colors) > 200  # text, tables and a figure, not a blank page
        # The top of the page holds the title and the summary cards: dark text on white.
        top = np.asarray(rgb.crop((0, 0, 1280, 200)), dtype=np.int32)
        assert top.sum(axis=2).min() < 150
    (tmp_path / "profile-dom").mkdir()
    dom = subprocess.run(
        [
            chromium,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={tmp_path / 'profile-dom'}",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert dom.stdout.count("<table") >= 4
    assert "hetsched placement report" in dom.stdout
    assert dom.stdout.count('src="data:image/png;base64,') >= 5


def test_baseline_beyond_free_devices_is_flagged(ctx: report.PlanContext) -> None:
    big = report.WorkloadCost("default/x", "a100", 20, 44.2, 1.0, pool_devices=(("a100", 20),))
    small = report.WorkloadCost("default/y", "h100", 1, 4.25, 1.0, pool_devices=(("h100", 1),))
    strategy = report.Strategy("s", "test", (big, small))
    assert report.over_free_devices(ctx, strategy) == ["a100: needs 20 devices, 12 free"]
    plan_strategy = report.baselines(ctx)[0]
    assert (
        report.over_free_devices(ctx, plan_strategy) == []
    )  # the plan fits the free devices by construction
