"""Workload intake: an AgentWorkload from the API server, validated and resolved into the
:class:`Registration` the planning loop plans (the Kopf handlers call :func:`reconcile_workload`).

Validation errors and a model ConfigMap that is missing or not JSON are reported in the status
(``reconciler.report_problem``) and end the handler: ``kopf.PermanentError`` for an invalid spec,
``kopf.TemporaryError`` (retried) while waiting for the ConfigMap or the planner.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, NoReturn

import kopf
from hetsched.scheduler.spec import AgentWorkloadSpec, format_validation_error
from pydantic import ValidationError

if TYPE_CHECKING:
    from hetsched.operator.settings import OperatorContext

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from hetsched.scheduler.catalog.models import ModelConfig
from hetsched.scheduler.placement.request import WorkloadRequest, resolve_workload

Key = tuple[str, str]  # (namespace, name)


@dataclass(frozen=True, slots=True)
class Registration:
    """A valid, resolved workload the planning loop plans."""

    key: Key
    generation: int
    uid: str
    request: WorkloadRequest
    spec: Mapping[str, Any]  # the spec as the API server returned it (for serving/containers)
    model_id: str  # what {model} renders to
    created: str = ""  # metadata.creationTimestamp (RFC 3339): older workloads keep their devices first


def resolve(
    namespace: str,
    name: str,
    spec: Mapping[str, Any],
    *,
    config_json: Mapping[str, Any] | None = None,
) -> tuple[WorkloadRequest, str]:
    """(request, model id for {model}); ValueError naming the field when the spec cannot be served."""
    model: ModelConfig | None = None
    if config_json is not None:
        from hetsched.scheduler import catalog

        cm = (spec.get("model") or {}).get("configMap") or {}
        label = f"{namespace}/{cm.get('name', 'configmap')}"
        try:
            model = catalog.load_hf_config(dict(config_json), label)
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"spec.model.configMap: {exc}") from None
    req = resolve_workload(dict(spec), name=name, namespace=namespace, model=model)
    pinned = (req.serving.prefill_image, req.serving.decode_image, req.serving.colocated_image)
    if req.engine is None and not any(pinned):
        # The children run the registry's image of the chosen engine (vLLM by default): its terms.
        req = replace(req, engine=req.serving.engine)
    # {model}: the Hugging Face id the workload names (the catalog maps ids onto its entries, an
    # -Instruct id onto its base model's figures), else the catalog entry's id, else its name.
    named = str((spec.get("model") or {}).get("name") or "")
    model_id = named if "/" in named else (req.model.hf_id or named or req.model.name)
    return req, str(model_id)


async def reconcile_workload(
    op: OperatorContext,
    namespace: str,
    name: str,
    uid: str,
    meta: Mapping[str, Any],
    spec: Mapping[str, Any],
    status: Mapping[str, Any],
) -> None:
    assert op.planning_loop is not None and op.reconciler is not None and op.kube is not None
    op.mark_indexed()
    key = (namespace, name)
    generation = int(meta.get("generation") or 0)
    op.reconciler.note_status(key, status)
    spec_doc = json.loads(json.dumps(dict(spec)))
    try:
        parsed = AgentWorkloadSpec.model_validate(spec_doc)
    except ValidationError as exc:
        message = format_validation_error(exc, "spec.")
        await _invalid(op, key, generation, uid, "InvalidSpec", message)
    config_json = None
    if parsed.model.config_map is not None:
        ref = parsed.model.config_map
        data = await op.kube.read_configmap(namespace, ref.name)
        if data is None or ref.key not in data:
            what = f"ConfigMap {namespace}/{ref.name}" + ("" if data is None else f" has no key {ref.key!r}")
            message = f"spec.model.configMap: waiting for {what}"
            await op.reconciler.report_problem(
                key, generation, uid, "ConfigMapNotFound", message, estimated=None
            )
            op.planning_loop.mark_invalid(key, generation)
            op.metrics.count("waiting")
            raise kopf.TemporaryError(message, delay=op.settings.configmap_retry_seconds)
        try:
            config_json = json.loads(data[ref.key])
        except json.JSONDecodeError as exc:
            await _invalid(
                op,
                key,
                generation,
                uid,
                "InvalidModelConfig",
                f"spec.model.configMap: {ref.key} is not JSON: {exc}",
            )
    try:
        request, model_id = await asyncio.to_thread(
            resolve, namespace, name, spec_doc, config_json=config_json
        )
    except ValueError as exc:
        message = str(exc).removeprefix(f"{namespace}/{name}: ")
        await _invalid(op, key, generation, uid, "InvalidSpec", message)
    created = str(meta.get("creationTimestamp") or "")
    op.planning_loop.register(Registration(key, generation, uid, request, spec_doc, model_id, created))
    try:
        await op.planning_loop.plan_for(key, generation, op.settings.plan_timeout_seconds)
    except TimeoutError as exc:
        op.metrics.count("waiting")
        raise kopf.TemporaryError(f"waiting for the planner: {exc}", delay=2) from None
    except RuntimeError as exc:
        op.metrics.count("error")
        raise kopf.TemporaryError(str(exc), delay=10) from None
    await op.reconciler.converge(key)


async def _invalid(
    op: OperatorContext, key: Key, generation: int, uid: str, reason: str, message: str
) -> NoReturn:
    """Report an invalid spec in the status and stop retrying (until the spec changes)."""
    assert op.planning_loop is not None and op.reconciler is not None
    op.planning_loop.mark_invalid(key, generation)
    await op.reconciler.report_problem(key, generation, uid, reason, message)
    op.metrics.count("invalid")
    raise kopf.PermanentError(message)
