"""scripts/audit_deps.py: the decisions, on fabricated per-project JSON (no network)."""

from __future__ import annotations

import importlib.util
import sys
from typing import Any

import pytest
from support import REPO

_spec = importlib.util.spec_from_file_location("audit_deps", REPO / "scripts" / "audit_deps.py")
assert _spec is not None and _spec.loader is not None
audit_deps = importlib.util.module_from_spec(_spec)
sys.modules["audit_deps"] = audit_deps
_spec.loader.exec_module(audit_deps)


def project(latest: str, *vulns: dict[str, Any]) -> dict[str, Any]:
    return {"info": {"name": "pkg", "version": latest}, "releases": {}, "vulnerabilities": list(vulns)}


def vuln(id: str, fixed_in: list[str], withdrawn: str | None = None) -> dict[str, Any]:
    return {
        "id": id,
        "aliases": [f"CVE-2026-{id[-4:]}"],
        "details": "something bad",
        "fixed_in": fixed_in,
        "link": f"https://osv.dev/vulnerability/{id}",
        "source": "osv",
        "withdrawn": withdrawn,
    }


@pytest.mark.parametrize(
    ("older", "newer"),
    [
        ("1.0", "1.0.1"),
        ("1.9", "1.10"),
        ("1.0.dev1", "1.0a1"),
        ("1.0a1", "1.0a2"),
        ("1.0a2", "1.0b1"),
        ("1.0b1", "1.0rc1"),
        ("1.0rc1.dev1", "1.0rc1"),
        ("1.0rc1", "1.0"),
        ("1.0", "1.0.post1"),
        ("1.0.post1.dev1", "1.0.post1"),
        ("2.4.6", "2.5.5"),
        ("65.5.0", "84.2.1"),
        ("2026.10.18", "1!0.1"),  # epoch
    ],
)
def test_version_order(older: str, newer: str) -> None:
    assert audit_deps.version_key(older) < audit_deps.version_key(newer)


def test_equal_versions() -> None:
    assert audit_deps.same_version("1.0", "1.0.0")
    assert audit_deps.same_version("1.0RC1", "1.0rc1")
    assert audit_deps.same_version("1.0+local", "1.0")
    assert not audit_deps.same_version("1.0", "1.0.post1")
    with pytest.raises(ValueError, match="PEP 440"):
        audit_deps.version_key("not a version")


def test_latest_without_vulnerabilities_is_audited_clean() -> None:
    f = audit_deps.audit_one("pkg", "2.0", project("2.0.0"))
    assert f.status == "audited" and not f.vulnerable and f.latest == "2.0.0"
    assert audit_deps.exit_code([f]) == 0


def test_a_listed_vulnerability_of_the_installed_latest_applies() -> None:
    doc = project("2.0", vuln("PYSEC-2026-0001", ["1.2.9", "2.0.1"]), vuln("GHSA-open-0002", []))
    f = audit_deps.audit_one("pkg", "2.0", doc)
    assert f.status == "audited" and [v.id for v in f.vulnerabilities] == [
        "PYSEC-2026-0001",
        "GHSA-open-0002",
    ]
    # Only fixes newer than the installed version are upgrade targets (1.2.9 is a backport).
    assert f.vulnerabilities[0].fixed_in == ("2.0.1",) and f.vulnerabilities[1].fixed_in == ()
    assert audit_deps.exit_code([f]) == 1
    text = audit_deps.report([f])
    assert "VULNERABLE pkg 2.0: PYSEC-2026-0001 (CVE-2026-0001), fixed in 2.0.1" in text
    assert "no fixed release listed" in text
    assert text.splitlines()[-1].startswith("1 distributions, 1 audited, 1 vulnerable (2 vulnerabilities)")


def test_withdrawn_or_fixed_in_the_installed_version_does_not_apply() -> None:
    doc = project(
        "2.0",
        vuln("PYSEC-2026-0003", ["2.1"], withdrawn="2026-01-02T00:00:00Z"),
        vuln("PYSEC-2026-0004", ["1.5", "2.0.0"]),  # a stale listing: fixed in this very release
    )
    f = audit_deps.audit_one("pkg", "2.0", doc)
    assert f.status == "audited" and not f.vulnerable
    assert audit_deps.applies(vuln("X-0005", ["3.0"]), "2.0")


@pytest.mark.parametrize(("installed", "word"), [("1.9", "older"), ("2.1.dev3", "newer")])
def test_not_the_latest_is_unauditable_not_clean(installed: str, word: str) -> None:
    doc = project("2.0", vuln("PYSEC-2026-0006", ["2.1"]))  # the latest's list says nothing about 1.9
    f = audit_deps.audit_one("pkg", installed, doc)
    assert f.status == "unauditable" and not f.vulnerable
    assert f.detail.startswith(f"not auditable here (installed {installed}, latest 2.0") and word in f.detail
    assert audit_deps.exit_code([f]) == 0
    assert audit_deps.exit_code([f], strict=True) == 2
    assert "0 vulnerable (0 vulnerabilities), 1 unauditable" in audit_deps.report([f])


@pytest.mark.parametrize(
    ("doc", "error"),
    [
        (None, "https://pypi.org/pypi/pkg/json: [Errno -2] Name or service not known"),
        ({"info": {}}, ""),
        ({"info": {"version": "1.0"}}, ""),  # no vulnerabilities key: not "none"
        ({"info": {"version": "1.0"}, "vulnerabilities": "n/a"}, ""),
    ],
)
def test_network_and_malformed_answers_are_errors_never_clean(doc: Any, error: str) -> None:
    f = audit_deps.audit_one("pkg", "1.0", doc, error)
    assert f.status == "error" and not f.vulnerable
    assert audit_deps.exit_code([f]) == 2
    text = audit_deps.report([f])
    assert "no known vulnerabilities" not in text.lower() and "not a clean audit" in text
    if error:
        assert error in text


def test_unreachable_index_end_to_end() -> None:
    """The whole pipeline with a URL nothing answers on: errors, exit 2, never a pass."""
    findings = audit_deps.audit(
        [("pkg", "1.0"), ("other", "2.0")], index="http://127.0.0.1:9/pypi", timeout=2
    )
    assert [f.status for f in findings] == ["error", "error"]
    assert audit_deps.summary(findings)["errors"] == 2 and audit_deps.exit_code(findings) == 2


def test_summary_counts() -> None:
    findings = [
        audit_deps.audit_one("a", "1.0", project("1.0")),
        audit_deps.audit_one("b", "1.0", project("1.0", vuln("PYSEC-2026-0007", ["1.1"]))),
        audit_deps.audit_one("c", "0.9", project("1.0")),
        audit_deps.audit_one("d", "1.0", None, "timed out"),
    ]
    assert audit_deps.summary(findings) == {
        "distributions": 4,
        "audited": 2,
        "vulnerable": 1,
        "vulnerabilities": 1,
        "unauditable": 1,
        "errors": 1,
    }
    assert audit_deps.exit_code(findings) == 1  # a vulnerability outranks the errors


def test_installed_distributions_skip_the_editable_project() -> None:
    names = {audit_deps.canonical_name(n) for n, _ in audit_deps.installed_distributions()}
    assert "hetsched" not in names  # installed with pip install -e
    assert {"fastapi", "kopf", "pydantic"} <= names
    assert "hetsched" in {
        audit_deps.canonical_name(n) for n, _ in audit_deps.installed_distributions(skip_editable=False)
    }
