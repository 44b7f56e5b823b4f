"""The Helm chart's static parts (no helm binary, no cluster): CRD copies, values schema, alert
rules, Grafana dashboard, Dockerfile. Rendering, linting and installing are in
tests/integration/test_chart.py; Prometheus evaluating the rules and the dashboard's queries in
tests/integration/test_prometheus.py.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from hetsched.operator import crdgen
from hetsched.operator.api.metrics import Metrics
from hetsched.operator.api.state import OperatorState
from prometheus_client import generate_latest
from support import REPO

CHART = REPO / "charts" / "hetsched"
RULES = CHART / "files" / "prometheus-rules.yaml"
DASHBOARD = CHART / "dashboards" / "hetsched.json"

# A PromQL metric name in an expression: an identifier not followed by "(" (functions) and not a
# keyword, label name or duration. Good enough for the expressions of this chart.
PROMQL_WORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool", "offset",
}  # fmt: skip


def exported_metric_names() -> set[str]:
    """Sample names the operator's /metrics can contain (from the registry, not from a list)."""
    text = generate_latest(Metrics(OperatorState()).registry).decode()
    names: set[str] = set()
    for line in text.splitlines():
        m = re.match(r"# TYPE (\S+) (\S+)", line)
        if not m:
            continue
        name, kind = m.groups()
        if kind == "histogram":
            names.update(f"{name}_{suffix}" for suffix in ("bucket", "sum", "count"))
        else:
            names.add(name)
    return names


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (label matchers and strings removed first)."""
    stripped = re.sub(r"\{[^}]*\}", "", expr)
    stripped = re.sub(r'"[^"]*"', "", stripped)
    stripped = re.sub(r"\[[^\]]*\]", "", stripped)
    stripped = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", stripped)
    out = set()
    for m in re.finditer(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\b(\s*\()?", stripped):
        word, call = m.group(1), m.group(2)
        if call or word in PROMQL_WORDS or re.fullmatch(r"\d+(ms|s|m|h|d|w|y)|e\d+", word):
            continue
        out.add(word)
    return out


def load_rules() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(RULES.read_text())
    return data


def all_rules() -> list[dict[str, Any]]:
    return [rule for group in load_rules()["groups"] for rule in group["rules"]]


def load_dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def dashboard_panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


# ---- chart metadata and CRDs -------------------------------------------------------------------


def test_chart_app_version_is_the_package_version() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert chart["apiVersion"] == "v2"
    assert chart["name"] == "hetsched"
    assert chart["appVersion"] == project["version"]


def test_chart_crds_are_identical_to_the_repository_crds() -> None:
    """The chart installs CRDs from its crds/ folder: byte-for-byte copies of crds/ (regenerate
    both with `hetsched crds` and `hetsched crds --out charts/hetsched/crds`)."""
    repo = {p.name: p.read_bytes() for p in sorted((REPO / "crds").glob("*.yaml"))}
    chart = {p.name: p.read_bytes() for p in sorted((CHART / "crds").glob("*.yaml"))}
    assert repo, "no CRDs in crds/"
    assert sorted(chart) == sorted(repo), "chart crds/ and repo crds/ hold different files"
    stale = [name for name in repo if chart[name] != repo[name]]
    assert not stale, (
        f"charts/hetsched/crds/{stale} differ from crds/: copy them (cp crds/*.yaml charts/hetsched/crds/)"
    )


def test_chart_crds_match_the_models() -> None:
    assert crdgen.drifted(CHART / "crds") == []


# ---- values and their schema -------------------------------------------------------------------


def _schema_nodes(node: Any, path: str = "$") -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(node, dict):
        yield path, node
        for key, sub in node.get("properties", {}).items():
            yield from _schema_nodes(sub, f"{path}.{key}")
        if isinstance(node.get("items"), dict):
            yield from _schema_nodes(node["items"], f"{path}[]")
        if isinstance(node.get("additionalProperties"), dict):
            yield from _schema_nodes(node["additionalProperties"], f"{path}.*")


def validate(instance: Any, schema: dict[str, Any], path: str = "$") -> list[str]:
    """The subset of JSON Schema (draft 7) that values.schema.json uses; helm itself validates the
    full schema in the integration tests."""
    errors: list[str] = []
    types = schema.get("type")
    if types is not None:
        allowed = types if isinstance(types, list) else [types]
        pytypes = {
            "object": dict,
            "array": list,
            "string": str,
            "boolean": bool,
            "integer": int,
            "number": (int, float),
        }
        ok = any(
            isinstance(instance, pytypes[t])
            and not (t in ("integer", "number") and isinstance(instance, bool))
            for t in allowed
        )
        if not ok:
            return [f"{path}: {instance!r} is not of type {types}"]
    if "enum" in schema and instance not in schema["enum"]:
        errors.append(f"{path}: {instance!r} not in {schema['enum']}")
    if isinstance(instance, str):
        if "pattern" in schema and not re.search(schema["pattern"], instance):
            errors.append(f"{path}: {instance!r} does not match {schema['pattern']}")
        if len(instance) < schema.get("minLength", 0) or len(instance) > schema.get("maxLength", 1 << 30):
            errors.append(f"{path}: length of {instance!r} out of range")
    if isinstance(instance, (int, float)) and not isinstance(instance, bool):
        if "minimum" in schema and instance < schema["minimum"]:
            errors.append(f"{path}: {instance} < {schema['minimum']}")
        if "maximum" in schema and instance > schema["maximum"]:
            errors.append(f"{path}: {instance} > {schema['maximum']}")
        if "exclusiveMinimum" in schema and instance <= schema["exclusiveMinimum"]:
            errors.append(f"{path}: {instance} <= {schema['exclusiveMinimum']}")
    if isinstance(instance, dict):
        for key in schema.get("required", []):
            if key not in instance:
                errors.append(f"{path}: {key} is required")
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        for key, value in instance.items():
            if "propertyNames" in schema:
                errors += validate(key, schema["propertyNames"], f"{path}.{key} (name)")
            if key in props:
                errors += validate(value, props[key], f"{path}.{key}")
            elif extra is False:
                errors.append(f"{path}: unknown key {key!r}")
            elif isinstance(extra, dict):
                errors += validate(value, extra, f"{path}.{key}")
    if isinstance(instance, list):
        if schema.get("uniqueItems") and len({json.dumps(i, sort_keys=True) for i in instance}) != len(
            instance
        ):
            errors.append(f"{path}: items are not unique")
        if isinstance(schema.get("items"), dict):
            for n, item in enumerate(instance):
                errors += validate(item, schema["items"], f"{path}[{n}]")
    return errors


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((CHART / "values.schema.json").read_text())
    return data


@pytest.fixture(scope="module")
def values() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text())
    return data


# Kubernetes types passed through to the pod spec unchanged: free-form on purpose.
PASSTHROUGH = {"$.affinity", "$.tolerations[]", "$.operator.extraEnv[]"}


def test_values_schema_is_strict(schema: dict[str, Any]) -> None:
    loose = []
    for path, node in _schema_nodes(schema):
        if node.get("type") == "object" and path not in PASSTHROUGH:
            if "properties" in node and node.get("additionalProperties") is not False:
                loose.append(path)
            if "properties" not in node and not isinstance(node.get("additionalProperties"), dict):
                loose.append(path)
    assert loose == []
    assert set(PASSTHROUGH) <= {path for path, _ in _schema_nodes(schema)}


def test_every_value_is_in_the_schema_and_valid(schema: dict[str, Any], values: dict[str, Any]) -> None:
    assert validate(values, schema) == []
    assert set(schema["properties"]) == set(values), "values.yaml and the schema list different keys"


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"replicas": 2}, "unknown key 'replicas'"),
        ({"operator": {"policy": "fastest"}}, "not in"),
        ({"operator": {"watchNamespaces": ["Not_A_Name"]}}, "does not match"),
        ({"serviceMonitor": {"enabled": True, "interval": "often"}}, "does not match"),
        ({"image": {"pullPolicy": "Sometimes"}}, "not in"),
        ({"containerPort": 80}, "< 1024"),
        ({"securityContext": {"privileged": "yes"}}, "not of type"),
        ({"service": {"nodePort": 30000}}, "unknown key 'nodePort'"),
    ],
)
def test_schema_rejects_bad_values(
    schema: dict[str, Any], values: dict[str, Any], change: dict[str, Any], error: str
) -> None:
    def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
        out = dict(base)
        for k, v in over.items():
            out[k] = merge(base[k], v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
        return out

    errors = validate(merge(values, change), schema)
    assert any(error in e for e in errors), errors


def test_default_values_are_hardened(values: dict[str, Any]) -> None:
    sc = values["securityContext"]
    assert sc["runAsNonRoot"] is True
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert sc["seccompProfile"]["type"] == "RuntimeDefault"
    assert values["podSecurityContext"]["runAsNonRoot"] is True
    assert values["podSecurityContext"]["runAsUser"] > 0
    assert values["serviceAccount"]["create"] is True
    assert values["rbac"]["create"] is True
    for optional in ("serviceMonitor", "prometheusRule", "grafanaDashboard"):
        assert values[optional]["enabled"] is False, optional
    assert values["grafanaDashboard"]["labels"] == {"grafana_dashboard": "1"}


def test_templates_do_not_grant_secrets_or_wildcards() -> None:
    text = "\n".join(p.read_text() for p in sorted((CHART / "templates").glob("*")))
    assert "secrets" not in text
    assert '"*"' not in text and "'*'" not in text


RBAC_RULE = re.compile(
    r"- apiGroups: \[([^\]]*)\]\s+resources: \[([^\]]*)\]\s+(?:resourceNames: \[[^\]]*\]\s+)?verbs: \[([^\]]*)\]"
)


def _names(items: str) -> list[str]:
    return [x.strip().strip('"') for x in items.split(",") if x.strip()]


def test_rbac_templates_grant_exactly_the_documented_table() -> None:
    """The rules in the templates (all namespaces: the ClusterRole with the namespaced rules) are
    the rows of the RBAC table in docs/helm.md; the conditional ones (watched namespaces only,
    leader election) are not in the table. The installed ClusterRole is compared in
    tests/integration/test_chart.py."""
    rbac = (CHART / "templates" / "rbac.yaml").read_text()
    # The ClusterRole's rules for watched namespaces only (namespaces; pods held outside them).
    watched_only = re.search(r"\{\{- if \$watch \}\}(.*?)\{\{- else \}\}", rbac, re.S)
    assert watched_only is not None
    only = {
        (r, tuple(_names(v))) for _g, r_, v in RBAC_RULE.findall(watched_only.group(1)) for r in _names(r_)
    }
    assert only == {("namespaces", ("list", "watch")), ("pods", ("list", "watch"))}
    text = rbac.replace(watched_only.group(1), "") + (CHART / "templates" / "_helpers.tpl").read_text()
    granted: dict[tuple[str, str], list[str]] = {}
    for m in RBAC_RULE.finditer(text):
        for group in _names(m.group(1)) or [""]:
            for resource in _names(m.group(2)):
                if (group, resource) in {
                    ("", "namespaces"),
                    ("coordination.k8s.io", "leases"),
                    ("inference.networking.k8s.io", "inferencepools"),  # with an endpoint picker only
                }:
                    continue
                granted.setdefault((group, resource), [])
                granted[(group, resource)] = sorted(set(granted[(group, resource)]) | set(_names(m.group(3))))
    table = (REPO / "docs" / "helm.md").read_text().split("<!-- rbac-table -->")[1]
    documented = {}
    for m in re.finditer(r"^\| (core|`[^`]+`) \| `([^`]+)` \| ([a-z, ]+) \|", table, re.M):
        group = "" if m.group(1) == "core" else m.group(1).strip("`")
        documented[(group, m.group(2))] = sorted(v.strip() for v in m.group(3).split(","))
    assert granted == documented
    # Pods: reads only (why a stuck child's pods are Pending; what the P/D router's Role grants),
    # nothing that reads logs, execs or writes.
    assert granted[("", "pods")] == ["get", "list", "watch"]
    # RBAC: namespaced Roles and RoleBindings (the router's), never escalate/bind or cluster-wide.
    assert not any(g == "rbac.authorization.k8s.io" and r.startswith("cluster") for g, r in granted)
    assert all(
        set(v) <= {"get", "list", "watch", "create", "patch", "delete"}
        for (g, _r), v in granted.items()
        if g == "rbac.authorization.k8s.io"
    )
    assert not any(r.startswith("pods/") for _g, r in granted)


# ---- alert rules -------------------------------------------------------------------------------


def test_rules_file_is_a_prometheus_rules_file() -> None:
    data = load_rules()
    assert set(data) == {"groups"}
    names = [rule["alert"] for rule in all_rules()]
    assert len(names) == len(set(names))
    for rule in all_rules():
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule["alert"]
        assert re.fullmatch(r"Hetsched[A-Z][A-Za-z]+", rule["alert"])
        assert rule["labels"]["severity"] in ("critical", "warning", "info")
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]


def test_rules_cover_the_operational_failures() -> None:
    by_expr = {rule["alert"]: rule["expr"] for rule in all_rules()}
    assert 'up{job="hetsched"}' in by_expr["HetschedOperatorDown"]
    assert 'result="error"' in by_expr["HetschedReconcileErrors"]
    # Per workload: infeasible, invalid spec, missing ConfigMap are all Degraded=True.
    degraded = by_expr["HetschedWorkloadDegraded"]
    assert 'hetsched_workload_condition{job="hetsched", condition="Degraded", status="True"}' in degraded
    assert "by (namespace, name)" in degraded
    assert 'regime="capacity-bound"' in by_expr["HetschedPhaseCapacityBound"]


def test_rules_use_only_exported_metrics() -> None:
    exported = exported_metric_names() | {"up"}
    for rule in all_rules():
        used = metric_names(rule["expr"])
        assert used, rule["alert"]
        assert used <= exported, (rule["alert"], used - exported)
        assert 'job="hetsched"' in rule["expr"], rule["alert"]


def test_metric_name_extraction() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (job, le) (rate(x_bucket{job="hetsched"}[10m]))) > 10'
        " and on (pool) y_total / (z > 0) or vector(0)"
    )
    assert metric_names(expr) == {"x_bucket", "y_total", "z"}


# ---- dashboard ---------------------------------------------------------------------------------


def test_dashboard_structure() -> None:
    dashboard = load_dashboard()
    assert dashboard["uid"] == "hetsched"
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    for name in ("namespace", "workload"):
        var = variables[name]
        assert var["type"] == "query" and var["includeAll"] and var["multi"]
        assert var["allValue"] == ".*"
    ids = [p["id"] for p in dashboard_panels(dashboard)]
    assert len(ids) == len(set(ids))
    for panel in dashboard_panels(dashboard):
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"] and panel.get("description"), panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]


def test_dashboard_uses_every_operator_metric_and_nothing_else() -> None:
    exported = exported_metric_names()
    used: set[str] = set()
    for panel in dashboard_panels(load_dashboard()):
        for target in panel.get("targets", []):
            names = metric_names(target["expr"])
            assert names, (panel["title"], target["expr"])
            assert names <= exported | {"up"}, (panel["title"], names - exported)
            used |= names
    for variable in load_dashboard()["templating"]["list"]:
        if variable["type"] == "query":
            m = re.fullmatch(r"label_values\((.+), (\w+)\)", variable["definition"])
            assert m, variable["definition"]
            assert metric_names(m.group(1)) <= exported
    wanted = {
        n for n in exported if not n.endswith(("_created", "_sum", "_count")) and n.startswith("hetsched_")
    }
    assert wanted - used == set()


def test_dashboard_filters_workload_panels_by_the_variables() -> None:
    for panel in dashboard_panels(load_dashboard()):
        for target in panel.get("targets", []):
            expr = target["expr"]
            for name in metric_names(expr):
                if name.startswith(("hetsched_phase_", "hetsched_workload_")):
                    selectors = re.findall(rf"{name}\{{([^}}]*)\}}", expr)
                    assert selectors, (panel["title"], name)
                    for sel in selectors:
                        assert 'namespace=~"$namespace"' in sel and 'name=~"$workload"' in sel, panel["title"]


# ---- image -------------------------------------------------------------------------------------


def test_dockerfile_runs_hetsched_as_non_root() -> None:
    text = (REPO / "Dockerfile").read_text()
    froms = re.findall(r"^FROM\s+(\S+)", text, re.M)
    assert froms and all(f == "${PYTHON_IMAGE}" for f in froms)
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.1[1-9][.\w-]*-slim", text, re.M)
    assert re.search(r"pip install \.", text)
    user = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert user == ["${UID}:${UID}"]
    uid = re.search(r"^ARG UID=(\d+)", text, re.M)
    assert uid and int(uid.group(1)) > 0
    assert re.search(r'^ENTRYPOINT \["hetsched"\]', text, re.M)
    assert re.search(r'^CMD \["operator", "run"\]', text, re.M)
    chart_uid = yaml.safe_load((CHART / "values.yaml").read_text())["podSecurityContext"]["runAsUser"]
    assert int(uid.group(1)) == chart_uid


def test_dockerignore_keeps_what_pip_install_needs() -> None:
    lines = [ln.strip() for ln in (REPO / ".dockerignore").read_text().splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith("#")]
    assert lines[0] == "**"
    kept = {ln[1:].rstrip("/") for ln in lines if ln.startswith("!")}
    copied = set(re.findall(r"^COPY (?!--from)(.+) \S+$", (REPO / "Dockerfile").read_text(), re.M))
    sources = {src.rstrip("/") for line in copied for src in line.split()}
    assert sources <= kept, sources - kept
    assert {"pyproject.toml", "README.md", "scheduler", "operator"} <= kept
