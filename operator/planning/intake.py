"""Workload intake: an AgentWorkload from the API server, validated and resolved into the
:class:`Registration` the planning loop plans (the Kopf handlers call :func:`reconcile_workload`;
an edit or deletion of a referenced ConfigMap calls it again, ``configmaps.py``).

Validation errors and a model ConfigMap that is missing or unreadable are reported in the status
(``reconciler.report_problem``) and end the handler: ``kopf.PermanentError`` for an invalid spec or
model config (``InvalidSpec``, ``InvalidModelConfig``), ``kopf.TemporaryError`` (retried) while
waiting for the ConfigMap or the planner. A workload that is already placed for its generation
keeps its placement and children when its ConfigMap goes away or turns invalid: the registration
it had (or, after a restart, the placement its status records) stays, with the problem as
``Degraded`` only.

The model config is untrusted input: ``scheduler.catalog.config_input`` reads it within bounds
(size, nesting, integer digits) and turns *any* failure of the reader into a message.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, NoReturn

import kopf
from hetsched.operator.planning.configmaps import Seen, content_hash
from hetsched.scheduler.catalog.config_input import guarded_load, read_model_config
from hetsched.scheduler.catalog.models import ModelConfig
from hetsched.scheduler.placement.request import WorkloadRequest, resolve_workload
from hetsched.scheduler.spec import AgentWorkloadSpec, format_validation_error
from pydantic import ValidationError

if TYPE_CHECKING:
    from hetsched.operator.planning.seed import Seed
    from hetsched.operator.settings import OperatorContext

Key = tuple[str, str]  # (namespace, name)
log = logging.getLogger("hetsched.intake")
CONFIG_MAP_NOT_FOUND = "ConfigMapNotFound"
INVALID_MODEL_CONFIG = "InvalidModelConfig"


class ModelConfigError(ValueError):
    """The model's ``config.json`` (from a ConfigMap) cannot be read: reported as InvalidModelConfig."""


@dataclass(frozen=True, slots=True)
class Registration:
    """A valid, resolved workload the planning loop plans."""

    key: Key
    generation: int
    uid: str
    # None only for a workload kept at the placement its status records while its model config
    # cannot be read (no request to plan it with: kept while its pools allow, else not placed).
    request: WorkloadRequest | None
    spec: Mapping[str, Any]  # the spec as the API server returned it (for serving/containers)
    model_id: str  # what {model} renders to
    created: str = ""  # metadata.creationTimestamp (RFC 3339): older workloads keep their devices first
    revision: str = ""  # hash of the model config it was resolved with ("" without a ConfigMap)
    seed: Seed | None = None  # the placement its status recorded at registration (``planning.seed``)
    problem: tuple[str, str] | None = None  # (reason, message): Degraded while the placement stays


def resolve(
    namespace: str,
    name: str,
    spec: Mapping[str, Any],
    *,
    config_json: Mapping[str, Any] | None = None,
    model: ModelConfig | None = None,
) -> tuple[WorkloadRequest, str]:
    """(request, model id for {model}); ValueError naming the field when the spec cannot be served
    (:class:`ModelConfigError` when the model config cannot be read)."""
    if config_json is not None:
        from hetsched.scheduler.catalog import hf_config

        cm = (spec.get("model") or {}).get("configMap") or {}
        label = f"{namespace}/{cm.get('name', 'configmap')}"
        try:
            model = guarded_load(lambda: hf_config.load_hf_config(dict(config_json), label), label)
        except ValueError as exc:
            raise ModelConfigError(f"spec.model.configMap: {exc}") from None
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


def _read_config(namespace: str, cm_name: str, key: str, text: str) -> ModelConfig:
    try:
        return read_model_config(text, what=f"{namespace}/{cm_name}[{key}]", name=f"{namespace}/{cm_name}")
    except ValueError as exc:
        raise ModelConfigError(f"spec.model.configMap: {exc}") from None


async def reconcile_workload(
    op: OperatorContext,
    namespace: str,
    name: str,
    uid: str,
    meta: Mapping[str, Any],
    spec: Mapping[str, Any],
    status: Mapping[str, Any] | None,
) -> None:
    from hetsched.operator.planning.seed import children_disagree, seed_from_status
    from hetsched.operator.settings import WORKLOADS_CRD

    assert op.planning_loop is not None and op.reconciler is not None and op.kube is not None
    op.mark_indexed()
    if WORKLOADS_CRD in op.missing_crds:  # the object is going with its CRD: write nothing
        raise kopf.TemporaryError(f"CustomResourceDefinition {WORKLOADS_CRD} is not installed", delay=10)
    key = (namespace, name)
    generation = int(meta.get("generation") or 0)
    known = op.planning_loop.registrations.get(key)
    if known is not None and known.uid != uid:  # a new object of the same name: nothing carries over
        op.planning_loop.forget(key)
        op.reconciler.forget(key)
        known = None
    op.reconciler.note_status(key, status)
    spec_doc = json.loads(json.dumps(dict(spec)))
    created = str(meta.get("creationTimestamp") or "")
    op.configmaps.workloads[key] = Seen(uid, generation, created, spec_doc)
    try:
        parsed = AgentWorkloadSpec.model_validate(spec_doc)
    except ValidationError as exc:
        message = format_validation_error(exc, "spec.")
        await _invalid(op, key, generation, uid, "InvalidSpec", message)
    seed = seed_from_status(status, generation)
    if seed is not None:
        disagree = children_disagree(seed, uid, op.children(key))
        if disagree is not None:
            log.info("%s/%s: not keeping the placement its status records: %s", namespace, name, disagree)
            seed = None
    # The last good registration of this generation: what a ConfigMap problem must not take away.
    last = known if known is not None and known.generation == generation else None
    model: ModelConfig | None = None
    revision = ""
    ref = parsed.model.config_map
    op.configmaps.track(key, None if ref is None else (namespace, ref.name, ref.key))
    if ref is not None:
        data = await op.kube.read_configmap(namespace, ref.name)
        op.configmaps.saw(key, None if data is None else data.get(ref.key))
        if data is None or ref.key not in data:
            what = f"ConfigMap {namespace}/{ref.name}" + ("" if data is None else f" has no key {ref.key!r}")
            message = f"spec.model.configMap: waiting for {what}"
            if not await _keep(
                op, key, generation, uid, spec_doc, created, last, seed, CONFIG_MAP_NOT_FOUND, message
            ):
                await op.reconciler.report_problem(
                    key, generation, uid, CONFIG_MAP_NOT_FOUND, message, estimated=None
                )
                op.planning_loop.mark_invalid(key, generation)
            op.metrics.count("waiting")
            raise kopf.TemporaryError(message, delay=op.settings.configmap_retry_seconds)
        text = data[ref.key]
        revision = content_hash(text)
        try:
            model = await asyncio.to_thread(_read_config, namespace, ref.name, ref.key, text)
        except ModelConfigError as exc:
            if await _keep(
                op, key, generation, uid, spec_doc, created, last, seed, INVALID_MODEL_CONFIG, str(exc)
            ):
                op.metrics.count("invalid")
                raise kopf.PermanentError(str(exc)) from None
            await _invalid(op, key, generation, uid, INVALID_MODEL_CONFIG, str(exc))
    try:
        request, model_id = await asyncio.to_thread(resolve, namespace, name, spec_doc, model=model)
    except ModelConfigError as exc:
        await _invalid(op, key, generation, uid, INVALID_MODEL_CONFIG, str(exc))
    except ValueError as exc:
        message = str(exc).removeprefix(f"{namespace}/{name}: ")
        await _invalid(op, key, generation, uid, "InvalidSpec", message)
    except Exception as exc:  # a resolver bug must end as a condition, not as a retried traceback
        log.exception("%s/%s: resolving the spec failed", namespace, name)
        await _invalid(
            op, key, generation, uid, "InvalidSpec", f"cannot resolve the spec: {type(exc).__name__}: {exc}"
        )
    if seed is not None and seed.model_config_hash not in (None, revision):
        seed = None  # the ConfigMap changed while no operator ran: plan it again
    reg = Registration(key, generation, uid, request, spec_doc, model_id, created, revision, seed)
    op.planning_loop.register(reg)
    if known is not None and known.problem is not None and op.planning_loop.registrations.get(key) is reg:
        op.reconciler.enqueue([key])  # the problem is gone even if the plan is the same
    try:
        await op.planning_loop.plan_for(key, generation, op.settings.plan_timeout_seconds, revision)
    except TimeoutError as exc:
        op.metrics.count("waiting")
        raise kopf.TemporaryError(f"waiting for the planner: {exc}", delay=2) from None
    except RuntimeError as exc:
        op.metrics.count("error")
        raise kopf.TemporaryError(str(exc), delay=10) from None
    await op.reconciler.converge(key)


async def _keep(
    op: OperatorContext,
    key: Key,
    generation: int,
    uid: str,
    spec: Mapping[str, Any],
    created: str,
    last: Registration | None,
    seed: Seed | None,
    reason: str,
    message: str,
) -> bool:
    """Keep a placed workload where it is despite a model-config problem: its last good
    registration, or after a restart the placement its status records; Degraded says why.
    False when there is nothing to keep (never placed for this generation)."""
    assert op.planning_loop is not None and op.reconciler is not None
    if last is not None:
        reg = replace(last, problem=(reason, message))
    elif seed is not None:
        revision = seed.model_config_hash or ""
        reg = Registration(
            key, generation, uid, None, spec, seed.model, created, revision, seed, (reason, message)
        )
    else:
        return False
    log.warning("%s/%s: %s; keeping its placement (Degraded %s)", key[0], key[1], message, reason)
    op.planning_loop.register(reg)
    op.reconciler.enqueue([key])
    return True


async def _invalid(
    op: OperatorContext, key: Key, generation: int, uid: str, reason: str, message: str
) -> NoReturn:
    """Report an invalid spec in the status and stop retrying (until the spec changes)."""
    assert op.planning_loop is not None and op.reconciler is not None
    op.planning_loop.mark_invalid(key, generation)
    await op.reconciler.report_problem(key, generation, uid, reason, message)
    op.metrics.count("invalid")
    raise kopf.PermanentError(message)
