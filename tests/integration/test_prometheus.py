"""The chart's monitoring against real Prometheus components (the Debian `prometheus` package):

* `promtool check metrics` on the /metrics of a running operator with the example workloads placed;
* `promtool check rules` on the rules file and on the chart's rendered PrometheusRule;
* `promtool test rules`: every alert fires on synthetic series when it should, and not before;
* a real Prometheus on a free loopback port (temporary storage, 1 s scrape and rule evaluation,
  static target: the operator) evaluates the rules (health ok) and every PromQL expression of the
  rules and of the Grafana dashboard, which must return data for the demo workloads; the numbers
  must equal the workloads' status.

The binaries must be on PATH: the tests fail (never skip) without them (`apt-get install prometheus`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from support import REPO
from support.cluster import LocalCluster, free_port

CHART = REPO / "charts" / "hetsched"
RULES = CHART / "files" / "prometheus-rules.yaml"
DASHBOARD = CHART / "dashboards" / "hetsched.json"
EXAMPLES = REPO / "examples" / "workloads"
DEMO_WORKLOADS = ("chatbot.yaml", "coding.yaml", "computer-use.yaml", "web-use.yaml")
NAMESPACE = "prom-workloads"
INFEASIBLE = "too-big"  # the chatbot example at 100,000 requests/s: no pool can serve it
# Grafana's variables and macros, as the tests substitute them ("All" is the regex .*).
SUBSTITUTIONS = {
    "$namespace": ".*",
    "$workload": ".*",
    "$__rate_interval": "30s",
    "$__interval": "5s",
    "$__range": "1m",
}

pytestmark = [pytest.mark.integration, pytest.mark.prometheus]


def binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"`{name}` is not on PATH: install the Debian package (apt-get install prometheus)")
    return path


def get(url: str, timeout: float = 10) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()


def load_docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def workload_docs() -> list[dict[str, Any]]:
    out = []
    for name in DEMO_WORKLOADS:
        for doc in load_docs(EXAMPLES / name):
            doc["metadata"]["namespace"] = NAMESPACE
            out.append(doc)
    too_big = json.loads(json.dumps(out[0]))
    too_big["metadata"]["name"] = INFEASIBLE
    too_big["spec"]["demand"] = {"requestsPerSecond": 100000}
    return [*out, too_big]


def condition(obj: dict[str, Any], type_: str) -> str | None:
    for cond in obj.get("status", {}).get("conditions", []):
        if cond.get("type") == type_:
            return str(cond.get("status"))
    return None


def substitute(expr: str) -> str:
    for var, value in sorted(SUBSTITUTIONS.items(), key=lambda kv: -len(kv[0])):
        expr = expr.replace("${" + var[1:] + "}", value).replace(var, value)
    assert "$" not in expr, f"unsubstituted variable in {expr}"
    return expr


def dashboard_targets() -> list[tuple[str, dict[str, Any]]]:
    dashboard = json.loads(DASHBOARD.read_text())
    out = []
    for panel in dashboard["panels"]:
        for p in [panel, *panel.get("panels", [])]:
            out += [(p["title"], t) for t in p.get("targets", [])]
    return out


def rules() -> list[dict[str, Any]]:
    return [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]


# ---- the operator and Prometheus -------------------------------------------------------------


class Process:
    def __init__(self, argv: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.log = log
        self._file = log.open("w")
        self.proc = subprocess.Popen(
            argv, stdout=self._file, stderr=subprocess.STDOUT, env=env, cwd=log.parent, start_new_session=True
        )

    def check_alive(self, what: str) -> None:
        if self.proc.poll() is not None:
            raise AssertionError(f"{what} exited with {self.proc.returncode}:\n{self.text()[-4000:]}")

    def text(self) -> str:
        if not self._file.closed:
            self._file.flush()
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._file.close()


class Prom:
    def __init__(self, url: str) -> None:
        self.url = url

    def api(self, path: str, **params: str) -> Any:
        status, body = get(f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}")
        data = json.loads(body)
        assert status == 200 and data["status"] == "success", f"{path} {params}: {status} {body[:500]!r}"
        assert not data.get("warnings"), data["warnings"]
        return data["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.api("query", query=expr)
        assert data["resultType"] in ("vector", "scalar"), data
        return data["result"] if data["resultType"] == "vector" else [{"metric": {}, "value": data["result"]}]

    def query_range(self, expr: str, seconds: int = 30) -> list[dict[str, Any]]:
        end = time.time()
        data = self.api("query_range", query=expr, start=f"{end - seconds:.3f}", end=f"{end:.3f}", step="1")
        result: list[dict[str, Any]] = data["result"]
        return result


@pytest.fixture(scope="module")
def operator(
    cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Process]]:
    """The operator on a free loopback port, serving NAMESPACE with the demo workloads placed."""
    tmp = tmp_path_factory.mktemp("prom-operator")
    port = free_port()
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CHART / "crds"))
    for crd in ("agentworkloads.hetsched.io", "acceleratorprofiles.hetsched.io"):
        cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", f"crd/{crd}")
    cluster.kubectl("create", "namespace", NAMESPACE)
    # KUBECONFIG too: Kopf's login reads it at import, before --kubeconfig is parsed.
    env = os.environ | {"KUBECONFIG": str(cluster.kubeconfig)}
    argv = [
        sys.executable,
        "-m",
        "hetsched.operator",
        "operator",
        "run",
        "--kubeconfig",
        str(cluster.kubeconfig),
    ]
    argv += ["--host", "127.0.0.1", "--port", str(port), "--namespace", NAMESPACE, "--resync-seconds", "5"]
    proc = Process(argv, tmp / "operator.log", env)
    url = f"http://127.0.0.1:{port}"
    try:

        def ready() -> bool:
            proc.check_alive("the operator")
            return get(url + "/readyz", timeout=2)[0] == 200

        cluster.wait_for(ready, timeout=90, what="operator /readyz")
        docs = workload_docs()
        cluster.kubectl(
            "apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": docs})
        )

        def settled() -> bool:
            items = {
                w["metadata"]["name"]: w
                for w in cluster.kubectl_json("get", "agentworkloads", "-n", NAMESPACE)["items"]
            }
            placed = [n for n, w in items.items() if n != INFEASIBLE and condition(w, "Placed") == "True"]
            return len(placed) == len(docs) - 1 and condition(items.get(INFEASIBLE, {}), "Degraded") == "True"

        cluster.wait_for(settled, timeout=120, what="the demo workloads Placed and too-big Degraded")
        yield url, proc
    finally:
        proc.stop()
        cluster.kubectl("delete", "namespace", NAMESPACE, "--wait=false", check=False)


@pytest.fixture(scope="module")
def prometheus(
    cluster: LocalCluster, operator: tuple[str, Process], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Prom]:
    tmp = tmp_path_factory.mktemp("prometheus")
    target = operator[0].removeprefix("http://")
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [
            {"job_name": "hetsched", "honor_labels": True, "static_configs": [{"targets": [target]}]}
        ],
    }
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    argv = [
        binary("prometheus"),
        f"--config.file={tmp / 'prometheus.yml'}",
        f"--storage.tsdb.path={tmp / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--storage.tsdb.retention.time=1h",
        "--log.level=warn",
    ]
    proc = Process(argv, tmp / "prometheus.log")
    prom = Prom(f"http://127.0.0.1:{port}")
    try:

        def ready() -> bool:
            proc.check_alive("prometheus")
            return get(prom.url + "/-/ready", timeout=2)[0] == 200

        t0 = time.monotonic()
        cluster.wait_for(ready, timeout=60, what="prometheus /-/ready")
        # Every phase of every demo workload scraped, and enough scrapes for rate() over 30 s.
        phases = f'count(hetsched_phase_regime{{namespace="{NAMESPACE}", regime="compute-bound"}})'
        scrapes = 'count_over_time(up{job="hetsched"}[1m])'

        def scraped() -> bool:
            got, count = prom.query(phases), prom.query(scrapes)
            return (
                bool(got and count)
                and got[0]["value"][1] == str(2 * len(DEMO_WORKLOADS))
                and float(count[0]["value"][1]) >= 12
            )

        cluster.wait_for(scraped, timeout=90, what="12 scrapes of the operator with the demo workloads")
        print(f"prometheus ready and 12 scrapes in {time.monotonic() - t0:.1f} s")
        yield prom
    finally:
        proc.stop()


# ---- promtool ----------------------------------------------------------------------------------


def test_promtool_check_metrics_on_the_operators_output(
    operator: tuple[str, Process], tmp_path: Path
) -> None:
    status, body = get(operator[0] + "/metrics")
    assert status == 200
    text = body.decode()
    assert f'namespace="{NAMESPACE}"' in text  # the workloads are in it
    result = subprocess.run(
        [binary("promtool"), "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "" and result.stderr.strip() == "", result.stdout + result.stderr


def test_promtool_check_rules_on_the_file_and_the_rendered_prometheus_rule(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    rendered = [
        d
        for d in yaml.safe_load_all(
            cluster.helm("template", "hs", str(CHART), "--set", "prometheusRule.enabled=true").stdout
        )
        if d and d["kind"] == "PrometheusRule"
    ]
    (tmp_path / "rendered.yaml").write_text(yaml.safe_dump(rendered[0]["spec"]))
    for path in (RULES, tmp_path / "rendered.yaml"):
        result = subprocess.run(
            [binary("promtool"), "check", "rules", str(path)], capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert f"SUCCESS: {len(rules())} rules found" in result.stdout


def _annotations(alert: str, labels: dict[str, str], value: str) -> dict[str, str]:
    """The rule's annotations rendered the way Prometheus does for these simple templates."""
    (rule,) = [r for r in rules() if r["alert"] == alert]

    def sub(m: re.Match[str]) -> str:
        expr = m.group(1).strip()
        if expr.startswith("$labels."):
            return labels[expr.removeprefix("$labels.")]
        assert expr.startswith("$value"), expr
        return value

    return {k: re.sub(r"\{\{(.*?)\}\}", sub, v) for k, v in rule["annotations"].items()}


def _firing(alert: str, labels: dict[str, str], value: str = "") -> dict[str, Any]:
    severity = next(r["labels"]["severity"] for r in rules() if r["alert"] == alert)
    return {
        "exp_labels": {**labels, "severity": severity},
        "exp_annotations": _annotations(alert, labels, value),
    }


def test_promtool_unit_tests_every_alert_fires_when_it_should(tmp_path: Path) -> None:
    op = {"job": "hetsched", "instance": "op:8080"}
    sel = 'job="hetsched", instance="op:8080"'
    decode = {"namespace": "ns", "name": "coder", "phase": "decode", "pool": "a100"}
    tests = [
        {  # the operator stops being up at 6m: pending for 5 min, then firing
            "interval": "1m",
            "input_series": [{"series": f"up{{{sel}}}", "values": "1x5 0x20"}],
            "alert_rule_test": [
                {"eval_time": "5m", "alertname": "HetschedOperatorDown", "exp_alerts": []},
                {"eval_time": "9m", "alertname": "HetschedOperatorDown", "exp_alerts": []},
                {
                    "eval_time": "12m",
                    "alertname": "HetschedOperatorDown",
                    "exp_alerts": [_firing("HetschedOperatorDown", {})],
                },
            ],
        },
        {  # no target at all (never scraped) also counts as down
            "interval": "1m",
            "input_series": [{"series": 'up{job="other"}', "values": "1x20"}],
            "alert_rule_test": [
                {
                    "eval_time": "10m",
                    "alertname": "HetschedOperatorDown",
                    "exp_alerts": [_firing("HetschedOperatorDown", {})],
                },
            ],
        },
        {  # one error per second from the start; other results do not count
            "interval": "1m",
            "input_series": [
                {"series": f'hetsched_reconcile_total{{{sel}, result="error"}}', "values": "0+60x30"},
                {"series": f'hetsched_reconcile_total{{{sel}, result="placed"}}', "values": "0+600x30"},
                {"series": f"up{{{sel}}}", "values": "1x30"},
            ],
            "alert_rule_test": [
                {"eval_time": "8m", "alertname": "HetschedReconcileErrors", "exp_alerts": []},
                {
                    "eval_time": "20m",
                    "alertname": "HetschedReconcileErrors",
                    "exp_alerts": [_firing("HetschedReconcileErrors", op, "1")],
                },
                {"eval_time": "20m", "alertname": "HetschedOperatorDown", "exp_alerts": []},
            ],
        },
        {  # every reconcile takes 10-30 s: p99 interpolates to 29.8 s
            "interval": "1m",
            "input_series": [
                {"series": f'hetsched_reconcile_duration_seconds_bucket{{{sel}, le="5"}}', "values": "0x40"},
                {"series": f'hetsched_reconcile_duration_seconds_bucket{{{sel}, le="10"}}', "values": "0x40"},
                {
                    "series": f'hetsched_reconcile_duration_seconds_bucket{{{sel}, le="30"}}',
                    "values": "0+10x40",
                },
                {
                    "series": f'hetsched_reconcile_duration_seconds_bucket{{{sel}, le="+Inf"}}',
                    "values": "0+10x40",
                },
            ],
            "alert_rule_test": [
                {"eval_time": "10m", "alertname": "HetschedReconcileSlow", "exp_alerts": []},
                {
                    "eval_time": "30m",
                    "alertname": "HetschedReconcileSlow",
                    "exp_alerts": [_firing("HetschedReconcileSlow", op, "29.8s")],
                },
            ],
        },
        {  # ns/coder Degraded from 1m to 15m (reported by two operator instances during a
            # leader handover: one alert), then placed; ns/chat never Degraded, ns/wait Unknown
            "interval": "1m",
            "input_series": [
                *(
                    {
                        "series": f'hetsched_workload_condition{{job="hetsched", instance="{instance}", namespace="ns", name="coder", condition="Degraded", status="True"}}',
                        "values": "_ 1x13 stale",
                    }
                    for instance in ("op:8080", "op2:8080")
                ),
                {
                    "series": f'hetsched_workload_condition{{{sel}, namespace="ns", name="coder", condition="Degraded", status="False"}}',
                    "values": "1 stale _x13 1x20",
                },
                {
                    "series": f'hetsched_workload_condition{{{sel}, namespace="ns", name="chat", condition="Degraded", status="False"}}',
                    "values": "1x35",
                },
                {
                    "series": f'hetsched_workload_condition{{{sel}, namespace="ns", name="wait", condition="Degraded", status="Unknown"}}',
                    "values": "1x35",
                },
                {
                    "series": f'hetsched_workload_condition{{{sel}, namespace="ns", name="chat", condition="Placed", status="True"}}',
                    "values": "1x35",
                },
            ],
            "alert_rule_test": [
                {"eval_time": "4m", "alertname": "HetschedWorkloadDegraded", "exp_alerts": []},
                {
                    "eval_time": "10m",
                    "alertname": "HetschedWorkloadDegraded",
                    "exp_alerts": [_firing("HetschedWorkloadDegraded", {"namespace": "ns", "name": "coder"})],
                },
                {"eval_time": "16m", "alertname": "HetschedWorkloadDegraded", "exp_alerts": []},
                {"eval_time": "30m", "alertname": "HetschedWorkloadDegraded", "exp_alerts": []},
            ],
        },
        {  # decode capacity-bound for good, prefill compute-bound: only decode fires, after 15 min
            "interval": "1m",
            "input_series": [
                {
                    "series": f'hetsched_phase_regime{{{sel}, namespace="ns", name="coder", phase="decode", pool="a100", regime="capacity-bound"}}',
                    "values": "1x30",
                },
                {
                    "series": f'hetsched_phase_regime{{{sel}, namespace="ns", name="coder", phase="decode", pool="a100", regime="bandwidth-bound"}}',
                    "values": "0x30",
                },
                {
                    "series": f'hetsched_phase_regime{{{sel}, namespace="ns", name="coder", phase="prefill", pool="h100", regime="capacity-bound"}}',
                    "values": "0x30",
                },
                {
                    "series": f'hetsched_phase_regime{{{sel}, namespace="ns", name="coder", phase="prefill", pool="h100", regime="compute-bound"}}',
                    "values": "1x30",
                },
            ],
            "alert_rule_test": [
                {"eval_time": "10m", "alertname": "HetschedPhaseCapacityBound", "exp_alerts": []},
                {
                    "eval_time": "20m",
                    "alertname": "HetschedPhaseCapacityBound",
                    "exp_alerts": [_firing("HetschedPhaseCapacityBound", decode)],
                },
            ],
        },
        {  # h100 15 of 16 devices allocated; a100 half; an empty pool (0 devices) never fires
            "interval": "1m",
            "input_series": [
                {"series": f'hetsched_pool_devices_allocated{{{sel}, pool="h100"}}', "values": "15x30"},
                {"series": f'hetsched_pool_devices{{{sel}, pool="h100"}}', "values": "16x30"},
                {"series": f'hetsched_pool_devices_allocated{{{sel}, pool="a100"}}', "values": "8x30"},
                {"series": f'hetsched_pool_devices{{{sel}, pool="a100"}}', "values": "16x30"},
                {"series": f'hetsched_pool_devices_allocated{{{sel}, pool="gone"}}', "values": "0x30"},
                {"series": f'hetsched_pool_devices{{{sel}, pool="gone"}}', "values": "0x30"},
            ],
            "alert_rule_test": [
                {"eval_time": "10m", "alertname": "HetschedPoolNearlyFull", "exp_alerts": []},
                {
                    "eval_time": "20m",
                    "alertname": "HetschedPoolNearlyFull",
                    "exp_alerts": [_firing("HetschedPoolNearlyFull", {**op, "pool": "h100"}, "93.75%")],
                },
            ],
        },
    ]
    tested = {case["alertname"] for t in tests for case in t["alert_rule_test"]}
    assert tested == {r["alert"] for r in rules()}, "every alert needs a promtool test"
    spec = {"rule_files": [str(RULES)], "evaluation_interval": "1m", "tests": tests}
    (tmp_path / "rules_test.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    result = subprocess.run(
        [binary("promtool"), "test", "rules", str(tmp_path / "rules_test.yaml")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


# ---- a real Prometheus -------------------------------------------------------------------------


def test_prometheus_scrapes_the_operator(prometheus: Prom) -> None:
    targets = prometheus.api("targets")["activeTargets"]
    assert [(t["labels"]["job"], t["health"]) for t in targets] == [("hetsched", "up")], targets
    # honor_labels: the workloads' own namespace label, not exported_namespace.
    assert prometheus.query(f'hetsched_phase_regime{{namespace="{NAMESPACE}"}}')
    assert prometheus.query("hetsched_phase_regime{exported_namespace!=''}") == []


def test_prometheus_evaluates_every_rule(prometheus: Prom) -> None:
    def evaluated() -> list[dict[str, Any]] | None:
        groups = prometheus.api("rules")["groups"]
        loaded = [r for g in groups for r in g["rules"]]
        done = all(
            r.get("lastEvaluation", "").startswith("2") and not r["lastEvaluation"].startswith("0001")
            for r in loaded
        )
        return loaded if done else None

    deadline = time.monotonic() + 30
    loaded = None
    while loaded is None and time.monotonic() < deadline:
        loaded = evaluated()
        time.sleep(0.5)
    assert loaded is not None, "rules not evaluated"
    assert sorted(r["name"] for r in loaded) == sorted(r["alert"] for r in rules())
    bad = [
        (r["name"], r["health"], r.get("lastError"))
        for r in loaded
        if r["health"] != "ok" or r.get("lastError")
    ]
    assert bad == []


TOKEN = re.compile(
    r'"(?:[^"\\]|\\.)*"'  # string literals
    r"|\[[^\]]*\]"  # range and subquery brackets
    r"|\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)"  # label lists
    r"|(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?(\s*\(|\s+(?:by|without)\s*\([^)]*\))?"  # names, calls
)
KEYWORDS = {
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
}


def selectors(expr: str) -> set[str]:
    """The vector selectors of a PromQL expression, e.g. {'up{job="hetsched"}'} for
    `absent(up{job="hetsched"} == 1)`."""
    out = set()
    for m in TOKEN.finditer(expr):
        name, matchers, call = m.groups()
        if name and not call and name not in KEYWORDS:
            out.add(name + (matchers or ""))
    return out


def test_selectors() -> None:
    expr = 'histogram_quantile(0.99, sum by (job, le) (rate(x_bucket{job="hetsched"}[10m]))) > 10 and on (pool) y / (z{a="b"} > 0)'
    assert selectors(expr) == {'x_bucket{job="hetsched"}', "y", 'z{a="b"}'}


def test_every_rule_expression_queries_and_selects_data(prometheus: Prom) -> None:
    for rule in rules():
        prometheus.query(rule["expr"])  # no error
        for selector in selectors(rule["expr"]):
            assert prometheus.query(selector), f"{rule['alert']}: {selector} has no data"


def test_capacity_bound_and_degraded_alerts_see_the_demo(cluster: LocalCluster, prometheus: Prom) -> None:
    by_alert = {r["alert"]: r["expr"] for r in rules()}
    items = cluster.kubectl_json("get", "agentworkloads", "-n", NAMESPACE)["items"]
    capacity_bound = {
        (w["metadata"]["name"], phase)
        for w in items
        for phase in ("prefill", "decode")
        if (w.get("status", {}).get(phase) or {}).get("regime") == "capacity-bound"
    }
    assert capacity_bound, "the demo has capacity-bound decode phases (long agent contexts)"
    got = prometheus.query(by_alert["HetschedPhaseCapacityBound"])
    assert {
        (s["metric"]["name"], s["metric"]["phase"]) for s in got if s["metric"]["namespace"] == NAMESPACE
    } == capacity_bound
    degraded = prometheus.query(by_alert["HetschedWorkloadDegraded"])
    assert {
        (s["metric"]["namespace"], s["metric"]["name"])
        for s in degraded
        if s["metric"]["namespace"] == NAMESPACE
    } == {(NAMESPACE, INFEASIBLE)}, "too-big is Degraded (infeasible), the placed workloads are not"
    assert prometheus.query(by_alert["HetschedOperatorDown"]) == []
    assert prometheus.query(by_alert["HetschedReconcileErrors"]) == []


def test_every_dashboard_query_returns_data(prometheus: Prom) -> None:
    empty = []
    for title, target in dashboard_targets():
        expr = substitute(target["expr"])
        result = prometheus.query(expr)
        # The whole expression, and each selector in it (`or vector(0)` must not hide a typo).
        for part in (expr, *selectors(expr)):
            if not prometheus.query(part):
                empty.append((title, target["refId"], part))
        if not result:
            continue
        if not target.get("instant"):
            assert prometheus.query_range(expr), (title, expr)
    assert empty == []


def test_dashboard_variables_list_the_demo(prometheus: Prom) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    names = {d["metadata"]["name"] for d in workload_docs()} - {INFEASIBLE}
    for var in dashboard["templating"]["list"]:
        if var["type"] != "query":
            continue
        m = re.fullmatch(r"label_values\((.+), (\w+)\)", var["definition"])
        assert m, var["definition"]
        values = prometheus.api(f"label/{m.group(2)}/values", **{"match[]": substitute(m.group(1))})
        expected = {NAMESPACE} if var["name"] == "namespace" else names
        assert expected <= set(values), (var["name"], values)


def test_metrics_equal_the_workload_status(cluster: LocalCluster, prometheus: Prom) -> None:
    items = cluster.kubectl_json("get", "agentworkloads", "-n", NAMESPACE)["items"]
    for metric, field in (
        ("hetsched_phase_operational_intensity_flops_per_byte", "operationalIntensity"),
        ("hetsched_phase_capacity_footprint_bytes", "capacityFootprintBytes"),
        ("hetsched_phase_predicted_tokens_per_second", "tokensPerSecond"),
        ("hetsched_phase_ridge_point_flops_per_byte", "ridgePoint"),
    ):
        series = {
            (s["metric"]["name"], s["metric"]["phase"], s["metric"]["pool"]): float(s["value"][1])
            for s in prometheus.query(f'{metric}{{namespace="{NAMESPACE}"}}')
        }
        expected = {
            (w["metadata"]["name"], phase, w["status"][phase]["pool"]): float(w["status"][phase][field])
            for w in items
            for phase in ("prefill", "decode")
            if (w.get("status", {}).get(phase) or {}).get("pool")
        }
        assert series == pytest.approx(expected), metric
    cost = {
        s["metric"]["name"]: float(s["value"][1])
        for s in prometheus.query(
            f'hetsched_workload_cost_dollars_per_million_tokens{{namespace="{NAMESPACE}"}}'
        )
    }
    assert cost == pytest.approx(
        {
            w["metadata"]["name"]: float(w["status"]["dollarsPerMillionTokens"])
            for w in items
            if w["metadata"]["name"] != INFEASIBLE
        }
    )
    for metric, field in (
        ("hetsched_workload_slo_ttft_seconds", "ttftSeconds"),
        ("hetsched_workload_slo_tpot_seconds", "tpotSeconds"),
    ):
        slo = {
            s["metric"]["name"]: float(s["value"][1])
            for s in prometheus.query(f'{metric}{{namespace="{NAMESPACE}"}}')
        }
        assert slo == {w["metadata"]["name"]: float(w["spec"]["slo"][field]) for w in items}, metric

    def conditions_match() -> bool:
        # Both read afresh: a condition (Ready) may flip between a scrape and the kubectl read.
        items = cluster.kubectl_json("get", "agentworkloads", "-n", NAMESPACE)["items"]
        series = {
            (s["metric"]["name"], s["metric"]["condition"], s["metric"]["status"]): float(s["value"][1])
            for s in prometheus.query(f'hetsched_workload_condition{{namespace="{NAMESPACE}"}}')
        }
        expected = {
            (w["metadata"]["name"], c["type"], c["status"]): 1.0
            for w in items
            for c in w["status"]["conditions"]
            if c["type"] in ("Estimated", "Placed", "Ready", "Degraded")
        }
        return len(expected) == 4 * len(items) and series == expected

    cluster.wait_for(conditions_match, timeout=15, what="hetsched_workload_condition equal to the conditions")
