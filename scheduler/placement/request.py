"""A workload resolved for the planner: model, token shape, precisions, demand, SLOs, constraints.

``resolve_workload`` turns an ``AgentWorkloadSpec`` (or the spec as a plain dict, as the operator
gets it from the API server) into a :class:`WorkloadRequest`. Token shape (docs/placement.md):

* prompt ``P`` new tokens per turn, ``C`` cached prefix tokens, ``O`` output tokens, from the agent
  profile (with the workload's overrides) at its *last* turn, the longest context — or at
  ``maxContextTokens`` when set (``analysis.Scenario.from_agent``);
* capacity context ``C + P + O``: the KV cache a request holds when its last token is generated,
  which is what memory is sized for (``max_model_len`` of the serving engine).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from hetsched.scheduler import catalog
from hetsched.scheduler.catalog.agents import AgentProfile
from hetsched.scheduler.catalog.models import ModelConfig
from hetsched.scheduler.engines import engine_of_images
from hetsched.scheduler.engines.platform import ServingChoice, choose_engine
from hetsched.scheduler.estimator.analysis import Scenario
from hetsched.scheduler.estimator.cost import Precisions
from hetsched.scheduler.estimator.serving import RequestShape
from hetsched.scheduler.spec import (
    AgentWorkload,
    AgentWorkloadSpec,
    DisaggregationMode,
    ModelRef,
    PrecisionSpec,
    format_validation_error,
)

ModelResolver = Callable[[ModelRef], ModelConfig]


@dataclass(frozen=True, slots=True)
class WorkloadRequest:
    """Everything the planner needs about one workload.

    Demand is either ``requests_per_second`` (λ, LLM calls per second) or ``concurrent_sessions``
    (S agent sessions, each with one request in flight: a closed loop without think time).
    """

    name: str
    model: ModelConfig
    agent: AgentProfile
    precisions: Precisions
    prompt_tokens: int
    cached_tokens: int
    output_tokens: int
    ttft_slo_seconds: float
    tpot_slo_seconds: float
    requests_per_second: float | None = None
    concurrent_sessions: int | None = None
    disaggregation: DisaggregationMode = DisaggregationMode.AUTO
    prefill_pools: frozenset[str] = frozenset()  # empty: any
    decode_pools: frozenset[str] = frozenset()
    excluded_pools: frozenset[str] = frozenset()
    max_batch: int | None = None
    namespace: str = "default"
    max_context_tokens: int | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    # The serving engine of spec.serving's images (engines.engine_of_images): its fitted terms
    # refine the calibrated efficiency; None (no serving spec, an unknown or mixed image): shared.
    engine: str | None = None
    # What will serve it (engine, KV connector, pinned images, experimental pairs): the engine's
    # limits (builds per pool, KV transfer between pools, TP rules) bound the placement.
    serving: ServingChoice = field(default_factory=ServingChoice)

    def __post_init__(self) -> None:
        if (self.requests_per_second is None) == (self.concurrent_sessions is None):
            raise ValueError(f"{self.name}: set exactly one of requests_per_second and concurrent_sessions")
        if self.requests_per_second is not None and self.requests_per_second <= 0:
            raise ValueError(f"{self.name}: requests_per_second must be > 0")
        if self.concurrent_sessions is not None and self.concurrent_sessions < 1:
            raise ValueError(f"{self.name}: concurrent_sessions must be ≥ 1")
        if self.ttft_slo_seconds <= 0 or self.tpot_slo_seconds <= 0:
            raise ValueError(f"{self.name}: SLOs must be > 0")
        if self.prompt_tokens < 1 or self.output_tokens < 1 or self.cached_tokens < 0:
            raise ValueError(f"{self.name}: prompt and output tokens must be ≥ 1, cached ≥ 0")

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def shape(self) -> RequestShape:
        """The token shape and formats the serving model predicts (``serving.RequestShape``)."""
        return RequestShape(self.prompt_tokens, self.cached_tokens, self.output_tokens, self.precisions)

    @property
    def capacity_context(self) -> int:
        """Tokens of KV a request holds at its last generated token: C + P + O."""
        return self.cached_tokens + self.prompt_tokens + self.output_tokens

    @property
    def prefill_context(self) -> int:
        """Tokens of KV a request holds when its prefill ends (shipped to decode): C + P."""
        return self.cached_tokens + self.prompt_tokens

    def allows(self, phase: str, pool: str) -> bool:
        if pool in self.excluded_pools:
            return False
        allowed = self.prefill_pools if phase == "prefill" else self.decode_pools
        return not allowed or pool in allowed

    def exclusion_detail(self, phase: str, pool: str, known: Collection[str] = ()) -> str:
        """Why ``pool`` is not allowed for ``phase``; with ``known`` (the cluster's pools), the
        allowed pools the cluster does not have are named as unknown."""
        if pool in self.excluded_pools:
            return f"pool {pool} is in spec.pools.exclude"
        allowed = self.prefill_pools if phase == "prefill" else self.decode_pools
        detail = f"spec.pools.{phase} allows only {', '.join(sorted(allowed))}"
        missing = sorted(allowed - set(known)) if known else []
        if missing:
            detail += f" ({_unknown(missing)})"
        return detail

    def unknown_pools(self, known: Collection[str]) -> str:
        """``spec.pools.decode: unknown pool 'h10' (pools: a100, l4)`` for each phase whose
        ``spec.pools`` names pools the cluster does not have (``known``); "" when none does.

        Not a spec error: nodes may join later, and a change of the pools re-plans the workload.
        """
        parts = []
        for phase, allowed in (("prefill", self.prefill_pools), ("decode", self.decode_pools)):
            missing = sorted(allowed - set(known))
            if missing:
                parts.append(
                    f"spec.pools.{phase}: {_unknown(missing)} (pools: {', '.join(sorted(known)) or 'none'})"
                )
        return "; ".join(parts)

    # ---- variants, for suggestions -----------------------------------------------------------
    def with_context(self, context: int) -> WorkloadRequest:
        """The same workload served up to ``context`` tokens (Scenario.from_agent's convention)."""
        s = Scenario.from_agent(self.agent, context=context, prompt_tokens=self.prompt_tokens)
        return replace(self, cached_tokens=s.cached_tokens, max_context_tokens=context)

    def with_precisions(self, precisions: Precisions) -> WorkloadRequest:
        return replace(self, precisions=precisions)

    def with_slo(self, ttft: float | None = None, tpot: float | None = None) -> WorkloadRequest:
        return replace(
            self,
            ttft_slo_seconds=self.ttft_slo_seconds if ttft is None else ttft,
            tpot_slo_seconds=self.tpot_slo_seconds if tpot is None else tpot,
        )


UNKNOWN_POOL = "unknown-pool"  # the reason of a workload not placed because spec.pools names missing pools


def _unknown(pools: list[str]) -> str:
    return ("unknown pool " if len(pools) == 1 else "unknown pools ") + ", ".join(repr(p) for p in pools)


def default_model_resolver(ref: ModelRef) -> ModelConfig:
    if ref.name is not None:
        return catalog.get_model(ref.name)
    assert ref.config_map is not None
    raise ValueError(
        f"model.configMap {ref.config_map.name!r}: the config.json lives in the cluster; pass the "
        "resolved model (model= or model_resolver=) — the operator reads the ConfigMap"
    )


def resolve_workload(
    spec: AgentWorkloadSpec | Mapping[str, Any],
    *,
    name: str,
    namespace: str = "default",
    model: ModelConfig | None = None,
    model_resolver: ModelResolver | None = None,
    agent: AgentProfile | None = None,
) -> WorkloadRequest:
    """Resolve a workload spec (pydantic object, or the ``spec`` dict of the manifest, camelCase).

    ``model`` short-cuts model resolution (the operator passes the ModelConfig it built from a
    ConfigMap's config.json); otherwise ``model_resolver`` (default: the model catalog by name).
    ``agent`` likewise replaces the catalog lookup of ``spec.agent.profile``. Raises ValueError
    naming the field on a bad spec or an unknown model/agent.
    """
    if not isinstance(spec, AgentWorkloadSpec):
        try:
            spec = AgentWorkloadSpec.model_validate(spec)
        except Exception as exc:  # pydantic ValidationError
            from pydantic import ValidationError

            if isinstance(exc, ValidationError):
                raise ValueError(f"{namespace}/{name}: spec: {format_validation_error(exc)}") from None
            raise
    if model is None:
        try:
            model = (model_resolver or default_model_resolver)(spec.model)
        except (KeyError, LookupError) as exc:
            raise ValueError(f"{namespace}/{name}: spec.model: {exc}") from None
    if agent is None:
        try:
            agent = catalog.get_agent(spec.agent.profile)
        except (KeyError, LookupError) as exc:
            raise ValueError(f"{namespace}/{name}: spec.agent.profile: {exc}") from None
    agent = catalog.apply_overrides(agent, spec.agent.overrides.model_dump())
    precisions = precisions_from_spec(model, spec.precision)
    scenario = Scenario.from_agent(agent, context=spec.max_context_tokens)
    return WorkloadRequest(
        name=name,
        namespace=namespace,
        model=model,
        agent=agent,
        precisions=precisions,
        prompt_tokens=scenario.prompt_tokens,
        cached_tokens=scenario.cached_tokens,
        output_tokens=scenario.output_tokens,
        ttft_slo_seconds=spec.slo.ttft_seconds,
        tpot_slo_seconds=spec.slo.tpot_seconds,
        requests_per_second=spec.demand.requests_per_second,
        concurrent_sessions=spec.demand.concurrent_sessions,
        disaggregation=spec.disaggregation,
        prefill_pools=frozenset(spec.pools.prefill),
        decode_pools=frozenset(spec.pools.decode),
        excluded_pools=frozenset(spec.pools.exclude),
        max_batch=spec.max_batch,
        max_context_tokens=spec.max_context_tokens,
        engine=_serving_engine(spec),
        serving=serving_choice(spec),
    )


def precisions_from_spec(model: ModelConfig, spec: PrecisionSpec) -> Precisions:
    """The formats of a workload's (or an estimate request's) ``precision`` spec."""
    return Precisions.requested(
        model, weights=spec.weights, kv_cache=spec.kv_cache, activations=spec.activations
    )


def _serving_engine(spec: AgentWorkloadSpec) -> str | None:
    """The engine whose calibrated terms apply: ``spec.serving.engine``, else the one its images
    name (None without ``spec.serving``, or with no or mixed images: the shared terms)."""
    s = spec.serving
    if s is None:
        return None
    if s.engine is not None:
        return s.engine.value
    return engine_of_images(c.image for c in (s.prefill, s.decode, s.colocated) if c is not None)


def serving_choice(spec: AgentWorkloadSpec) -> ServingChoice:
    """What serves the workload: ``spec.serving``'s engine (else its images', else vLLM), KV
    connector, experimental pairs and the images it pins per phase."""
    s = spec.serving
    if s is None:
        return ServingChoice()
    images = {
        phase: (c.image if c is not None else None)
        for phase, c in (("prefill", s.prefill), ("decode", s.decode), ("colocated", s.colocated))
    }
    return ServingChoice(
        engine=choose_engine(s.engine.value if s.engine else None, list(images.values())),
        connector=s.kv_connector.value if s.kv_connector else None,
        experimental_pairs=s.allow_experimental_pairs,
        prefill_image=images["prefill"],
        decode_image=images["decode"],
        colocated_image=images["colocated"],
    )


def resolve_manifest(
    manifest: AgentWorkload | Mapping[str, Any],
    *,
    model: ModelConfig | None = None,
    model_resolver: ModelResolver | None = None,
) -> WorkloadRequest:
    """Resolve a whole AgentWorkload manifest (``metadata.name``/``namespace`` name the request)."""
    if not isinstance(manifest, AgentWorkload):
        from hetsched.scheduler.spec import parse_workload

        manifest = parse_workload(manifest)
    return resolve_workload(
        manifest.spec,
        name=manifest.metadata.name,
        namespace=manifest.metadata.namespace,
        model=model,
        model_resolver=model_resolver,
    )


def load_requests(paths: list[str], *, model_resolver: ModelResolver | None = None) -> list[WorkloadRequest]:
    """Read AgentWorkload manifests from files and resolve them (duplicate names are an error)."""
    from hetsched.scheduler.spec import load_workloads

    out: list[WorkloadRequest] = []
    seen: dict[str, str] = {}
    for path in paths:
        for wl in load_workloads(path):
            req = resolve_manifest(wl, model_resolver=model_resolver)
            if req.key in seen:
                raise ValueError(f"{path}: workload {req.key} is also defined in {seen[req.key]}")
            seen[req.key] = path
            out.append(req)
    return out
