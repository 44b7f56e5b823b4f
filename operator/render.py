"""``hetsched render``: the exact objects the operator would create for AgentWorkloads on a pool
file, offline, for review or a GitOps repository.

    hetsched render --pools examples/pools/demo.yaml examples/workloads/chatbot.yaml
    hetsched render --pools pools.yaml -o json --owner-uid default/chatbot-8b=<uid> chatbot.yaml

It runs the operator's own pipeline: each manifest through the intake's ``resolve`` (the
Registration the planning loop would hold), one planning round of ``plan_workloads`` on the pools
of the file (as the operator's first round on those nodes: every workload planned together), and
``children.desired_children`` (the same builders the reconciler applies). ConfigMaps in the input
files stand in for those a ``spec.model.configMap`` names.

Owner references need the workload's ``metadata.uid``, which exists only in a cluster: without
``--owner-uid`` the objects carry none (applying them from Git would otherwise tie them to an owner
that does not exist, and the garbage collector deletes such objects); with it they are exactly
what the operator writes, content hash included. Output: multi-document YAML (default) or a
``v1 List`` (``-o json``), workloads by namespace and name, each workload's objects by kind
(ServiceAccount, Role, RoleBinding, Service, Deployment, InferencePool) and name.

Exit status: 0 when every workload is placed, 1 when some are not (their reasons go to stderr, the
others' objects still print), 2 on a usage or input error.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from hetsched.scheduler.spec import API_GROUP, API_VERSION, KIND

NO_UID = ""


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "render",
        help="print the objects the operator would create for workloads (GitOps review)",
        description="Plan AgentWorkload manifests on a pool file exactly as the operator would and print "
        "every object it would create: engine Deployments, the workload Service, the P/D router and its "
        "RBAC (docs/serving.md).",
    )
    p.add_argument("--pools", required=True, metavar="POOLS.yaml", help="pool file (docs/pools.md)")
    p.add_argument("workloads", nargs="+", metavar="WORKLOAD.yaml", help="AgentWorkload manifests")
    p.add_argument("-o", "--output", choices=("yaml", "json"), default="yaml")
    p.add_argument(
        "--owner-uid",
        action="append",
        default=[],
        metavar="[NAMESPACE/NAME=]UID",
        help="the workload's metadata.uid in the cluster, to render owner references (repeatable; "
        "a bare UID when there is one workload)",
    )
    p.add_argument(
        "--inference-pool-epp",
        metavar="SERVICE",
        default=None,
        help="also render an InferencePool per workload for this endpoint-picker Service (as the "
        "operator does with --inference-pool-epp when the CRD is installed)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hetsched.operator.reconcile.manifests import RenderOptions

    docs = _read(args.workloads)
    workloads = [d for d in docs if d.get("kind") == KIND]
    if not workloads:
        raise ValueError("no AgentWorkload in the input files")
    uids = _owner_uids(args.owner_uid, workloads)
    options = RenderOptions(inference_pool_epp=args.inference_pool_epp)
    objects, problems = render(Path(args.pools), docs, uids, options)
    for line in problems:
        print(f"hetsched render: {line}", file=sys.stderr)
    if args.output == "json":
        doc = {"apiVersion": "v1", "kind": "List", "items": objects}
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
    else:
        sys.stdout.write(yaml.safe_dump_all(objects, sort_keys=False, width=120) if objects else "")
    return 1 if problems else 0


def render(
    pools_path: Path,
    docs: Sequence[Mapping[str, Any]],
    uids: Mapping[tuple[str, str], str] | None = None,
    options: Any = None,
) -> tuple[list[dict[str, Any]], list[str]]:
    """(objects, problems) for the AgentWorkloads among ``docs`` (ConfigMaps among them answer
    ``spec.model.configMap``) on the pools of ``pools_path``. ValueError on invalid input."""
    from hetsched.operator.planning.intake import Registration, resolve
    from hetsched.operator.planning.plans import plan_workloads
    from hetsched.operator.pools.build import PoolsInput
    from hetsched.operator.reconcile.children import desired_children
    from hetsched.scheduler.pools import build_cluster
    from hetsched.scheduler.spec import AgentWorkloadSpec, format_validation_error
    from pydantic import ValidationError

    uids = uids or {}
    cluster = build_cluster(pools_path)
    fingerprint = hashlib.sha256(pools_path.read_bytes()).hexdigest()[:16]
    pools = PoolsInput(cluster, (), fingerprint)
    configmaps = {
        (str((d.get("metadata") or {}).get("namespace") or "default"), str(d["metadata"]["name"])): d
        for d in docs
        if d.get("kind") == "ConfigMap" and (d.get("metadata") or {}).get("name")
    }
    regs: list[Registration] = []
    seen: set[tuple[str, str]] = set()
    for doc in docs:
        if doc.get("kind") != KIND:
            continue
        if doc.get("apiVersion") != f"{API_GROUP}/{API_VERSION}":
            raise ValueError(f"apiVersion: expected {API_GROUP}/{API_VERSION}, got {doc.get('apiVersion')!r}")
        meta = doc.get("metadata") or {}
        name = str(meta.get("name") or "")
        namespace = str(meta.get("namespace") or "default")
        if not name:
            raise ValueError("an AgentWorkload without metadata.name")
        key = (namespace, name)
        if key in seen:
            raise ValueError(f"{namespace}/{name}: given twice")
        seen.add(key)
        spec = json.loads(json.dumps(doc.get("spec") or {}))
        try:
            parsed = AgentWorkloadSpec.model_validate(spec)
        except ValidationError as exc:
            raise ValueError(f"{namespace}/{name}: {format_validation_error(exc, 'spec.')}") from None
        config_json = None
        if parsed.model.config_map is not None:
            ref = parsed.model.config_map
            cm = configmaps.get((namespace, ref.name))
            data = (cm or {}).get("data") or {}
            if ref.key not in data:
                raise ValueError(
                    f"{namespace}/{name}: spec.model.configMap: no ConfigMap {namespace}/{ref.name} with key "
                    f"{ref.key!r} in the input files"
                )
            config_json = json.loads(data[ref.key])
        request, model_id = resolve(namespace, name, spec, config_json=config_json)
        regs.append(Registration(key, 1, uids.get(key, NO_UID), request, spec, model_id))
    plans = plan_workloads(regs, pools)
    objects: list[dict[str, Any]] = []
    problems: list[str] = []
    for reg in sorted(regs, key=lambda r: r.key):
        plan = plans[reg.key]
        label = f"{reg.key[0]}/{reg.key[1]}"
        if not plan.placed:
            problems.append(f"{label}: not placed ({plan.reason}): {plan.message}")
            continue
        try:
            children = desired_children(reg, plan, options)
        except ValueError as exc:
            problems.append(f"{label}: spec.serving: {exc}")
            continue
        if not reg.uid:
            children = [_without_owner(c) for c in children]
        objects.extend(children)
    return objects, problems


def _without_owner(obj: dict[str, Any]) -> dict[str, Any]:
    """The object without owner references, its content hash recomputed."""
    from hetsched.operator.reconcile.manifests import stamp

    out = json.loads(json.dumps(obj))
    out["metadata"].pop("ownerReferences", None)
    return stamp(out)


def _read(paths: Sequence[str]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for path in paths:
        try:
            docs = [d for d in yaml.safe_load_all(Path(path).read_text()) if d is not None]
        except yaml.YAMLError as exc:
            raise ValueError(f"{path}: not valid YAML: {exc}") from None
        for i, d in enumerate(docs):
            if not isinstance(d, dict):
                raise ValueError(f"{path}[{i}]: expected a mapping (a Kubernetes object)")
            out.append(d)
    return out


def _owner_uids(values: Sequence[str], workloads: Sequence[Mapping[str, Any]]) -> dict[tuple[str, str], str]:
    keys = [
        (
            str((w.get("metadata") or {}).get("namespace") or "default"),
            str((w.get("metadata") or {}).get("name")),
        )
        for w in workloads
    ]
    out: dict[tuple[str, str], str] = {}
    for v in values:
        target, sep, uid = v.rpartition("=")
        if not sep:
            if len(keys) != 1:
                raise ValueError(
                    f"--owner-uid {v!r}: name the workload (NAMESPACE/NAME=UID): there are {len(keys)}"
                )
            out[keys[0]] = v
            continue
        ns, slash, name = target.partition("/")
        key = (ns, name) if slash else ("default", target)
        if key not in keys or not uid:
            raise ValueError(f"--owner-uid {v!r}: expected NAMESPACE/NAME=UID of a workload in the input")
        out[key] = uid
    return out
