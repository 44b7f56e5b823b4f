"""The bad-input corpus (``tests/data/bad_inputs/*.yaml``) against the API server and a live operator.

Each file holds one invalid AgentWorkload or AcceleratorProfile (with the ConfigMap it refers to,
if any) and, in ``#!`` header lines, the outcome it must have:

* ``outcome: rejected`` — ``kubectl apply`` fails and its message contains every entry of
  ``fields`` (the field path, or the CEL rule's message that names the fields);
* ``outcome: condition`` — the object is accepted and the operator gives it ``condition``
  (type/status/reason) with every entry of ``message`` in the condition's message; a workload
  that is not placed has no children.

``inflate`` makes a file's object large at test time (so the corpus stays small). Throughout, a
canary workload in the same namespace stays placed and untouched, and the operator never
crashes (no traceback in its log, still ready).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from support import REPO
from support.cluster import LocalCluster
from support.harness import (
    CHAT,
    Operator,
    apply,
    children,
    condition,
    create_namespace,
    delete_namespace,
    get_aw,
    manifest,
    start_operator,
    stop_operator,
    tracebacks,
    wait,
    wait_condition,
)

CORPUS = REPO / "tests" / "data" / "bad_inputs"
FILES = sorted(CORPUS.glob("*.yaml"))
NS = "rb-corpus"


def load_case(path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(expectation from the ``#!`` lines, the YAML documents, inflated if asked)."""
    text = path.read_text()
    expect: dict[str, Any] = {}
    for line in text.splitlines():
        if line.startswith("#! "):
            key, _, value = line[3:].partition(":")
            expect[key.strip()] = json.loads(value)
    docs = [d for d in yaml.safe_load_all(text) if d is not None]
    inflate = expect.get("inflate")
    if inflate:
        meta = docs[-1].setdefault("metadata", {})
        meta["annotations"] = {
            f"example.com/blob-{i}": "x" * int(inflate["bytes"]) for i in range(int(inflate["annotations"]))
        }
    return expect, docs


def test_corpus_is_complete() -> None:
    """At least 40 cases, each with a recorded expectation; names unique (one namespace for all);
    numbered as tests/data/bad_inputs/README.md says (aw-/ap- by kind, 0xx rejected, 1xx condition)."""
    assert len(FILES) >= 40
    names: set[tuple[str, str]] = set()
    for path in FILES:
        expect, docs = load_case(path)
        assert expect.get("outcome") in ("rejected", "condition"), path.name
        numbered = re.fullmatch(r"(aw|ap)-([01])\d\d-[a-z0-9-]+\.yaml", path.name)
        assert numbered is not None, f"{path.name}: expected <aw|ap>-<0xx|1xx>-<what>.yaml"
        assert expect["outcome"] == ("rejected" if numbered.group(2) == "0" else "condition"), path.name
        kind = {"aw": "AgentWorkload", "ap": "AcceleratorProfile"}[numbered.group(1)]
        assert docs[-1].get("kind") == kind, path.name
        if expect["outcome"] == "rejected":
            assert expect.get("fields"), path.name
        else:
            assert expect["condition"].keys() == {"type", "status", "reason"}, path.name
        target = docs[-1]
        assert target.get("kind") in ("AgentWorkload", "AcceleratorProfile"), path.name
        key = (target["kind"], target["metadata"]["name"])
        assert key not in names, f"{path.name}: {key} used twice"
        names.add(key)
    kinds = {load_case(p)[1][-1]["kind"] for p in FILES}
    assert kinds == {"AgentWorkload", "AcceleratorProfile"}


@pytest.fixture(scope="module")
def corpus_operator(
    rel_cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Operator]:
    create_namespace(rel_cluster, NS)
    log = tmp_path_factory.mktemp("bad-inputs") / "operator.log"
    op = start_operator(rel_cluster, log, namespaces="rb-*")
    try:
        apply(rel_cluster, manifest("canary", CHAT, NS))
        wait_condition(rel_cluster, NS, "canary", "Placed", "True")
        yield op
    finally:
        stop_operator(op)
        print(f"--- operator log ({log}) ---\n{op.tail(30)}")
        delete_namespace(rel_cluster, NS)
        rel_cluster.kubectl("delete", "acceleratorprofiles", "--all", "--wait=false", check=False)


@pytest.fixture(scope="module")
def canary_before(rel_cluster: LocalCluster, corpus_operator: Operator) -> dict[str, Any]:
    wait(
        lambda: len([c for c in children(rel_cluster, NS) if c["kind"] == "Deployment"]) > 0,
        60,
        "canary children",
    )
    return {
        "status": get_aw(rel_cluster, NS, "canary")["status"],
        "children": {
            (c["kind"], c["metadata"]["name"]): c["metadata"].get("generation")
            for c in children(rel_cluster, NS)
        },
    }


def _get(cluster: LocalCluster, doc: dict[str, Any]) -> dict[str, Any]:
    if doc["kind"] == "AgentWorkload":
        return get_aw(cluster, NS, doc["metadata"]["name"])
    found: dict[str, Any] = cluster.kubectl_json("get", "acceleratorprofile", doc["metadata"]["name"])
    return found


@pytest.mark.integration
@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_bad_input(
    rel_cluster: LocalCluster, corpus_operator: Operator, canary_before: dict[str, Any], path: Path
) -> None:
    expect, docs = load_case(path)
    target = docs[-1]
    result = rel_cluster.kubectl("apply", "-n", NS, "-f", "-", input=yaml.safe_dump_all(docs), check=False)
    try:
        if expect["outcome"] == "rejected":
            assert result.returncode != 0, f"{path.name} was accepted: {result.stdout}"
            for fragment in expect["fields"]:
                assert fragment in result.stderr, f"{path.name}: {fragment!r} not in: {result.stderr[:2000]}"
            exists = rel_cluster.kubectl(
                "get", target["kind"].lower(), target["metadata"]["name"], "-n", NS, check=False
            )
            assert exists.returncode != 0, f"{path.name}: object exists after a failed apply"
        else:
            assert result.returncode == 0, f"{path.name} was rejected: {result.stderr}"
            want = expect["condition"]

            def has_condition() -> dict[str, Any] | None:
                obj = _get(rel_cluster, target)
                c = condition(obj, want["type"])
                current = (obj.get("status") or {}).get("observedGeneration") == obj["metadata"]["generation"]
                if c and current and (c["status"], c["reason"]) == (want["status"], want["reason"]):
                    return obj
                return None

            try:
                obj = wait(has_condition, 60, f"{path.name}: {want}")
            except AssertionError:
                raise AssertionError(
                    f"{path.name}: conditions {(_get(rel_cluster, target).get('status') or {}).get('conditions')}"
                ) from None
            message = condition(obj, want["type"])["message"]  # type: ignore[index]
            for fragment in expect.get("message", []):
                assert fragment in message, f"{path.name}: {fragment!r} not in {message!r}"
            placed = condition(obj, "Placed")
            if target["kind"] == "AgentWorkload" and placed is not None and placed["status"] == "False":
                name = target["metadata"]["name"]
                mine = [
                    c
                    for c in children(rel_cluster, NS)
                    if c["metadata"]["labels"].get("hetsched.io/workload") == name
                ]
                assert not mine, (
                    f"{path.name}: unplaced workload has children {[c['metadata']['name'] for c in mine]}"
                )
        assert corpus_operator.alive(), corpus_operator.tail()
    finally:
        if target["kind"] == "AcceleratorProfile":  # cluster-scoped: never leave one behind
            rel_cluster.kubectl(
                "delete", "acceleratorprofile", target["metadata"]["name"], "--ignore-not-found", check=False
            )


@pytest.mark.integration
def test_operator_survived_the_corpus_and_the_canary_is_untouched(
    rel_cluster: LocalCluster, corpus_operator: Operator, canary_before: dict[str, Any]
) -> None:
    op = corpus_operator
    assert op.alive() and op.ready(), op.tail()
    assert not tracebacks(op), tracebacks(op)[0]
    canary = get_aw(rel_cluster, NS, "canary")
    assert condition(canary, "Placed")["status"] == "True"  # type: ignore[index]
    for key in ("prefill", "decode", "mode", "observedGeneration"):
        assert canary["status"].get(key) == canary_before["status"].get(key), key
    now = {
        (c["kind"], c["metadata"]["name"]): c["metadata"].get("generation") for c in children(rel_cluster, NS)
    }
    for key, generation in canary_before["children"].items():
        assert now.get(key) == generation, f"canary child {key} rewritten"
    # The HTTP side still answers, and reports every accepted bad workload without crashing.
    listed = {w["name"] for w in op.get("/v1/workloads").json()["workloads"] if w["namespace"] == NS}
    assert "canary" in listed
    assert op.get("/metrics").status_code == 200
