"""Both phases of a workload on a hardware entry: the estimate the CLI, planner and operator share."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from hetsched.scheduler.catalog.agents import AgentProfile
from hetsched.scheduler.catalog.hardware import IDEAL, Efficiency, HardwareSpec
from hetsched.scheduler.catalog.models import ModelConfig
from hetsched.scheduler.estimator.cost import (
    Phase,
    PhaseCost,
    Precisions,
    estimate_phase,
    kv_profile,
)
from hetsched.scheduler.estimator.roofline import (
    DEFAULT_MEMORY_UTILIZATION,
    PhasePerformance,
    Regime,
    evaluate,
)


def decode_context(cached_tokens: int, prompt_tokens: int, output_tokens: int) -> int:
    """Tokens of context of the decode step that stands for a whole generation: the cached prefix,
    the prompt and half the output (the mean over the generated tokens) — the one modelling choice
    every decode estimate (analysis, serving model, planner, operator, report) uses."""
    return cached_tokens + prompt_tokens + output_tokens // 2


@dataclass(frozen=True, slots=True)
class Scenario:
    """Token shape of the request being served.

    Prefill processes ``prompt_tokens`` new tokens after ``cached_tokens`` of reused prefix; decode
    generates one token at ``decode_context`` tokens of context; both phases at batch ``batch``.
    """

    batch: int
    prompt_tokens: int
    cached_tokens: int
    decode_context: int
    output_tokens: int

    def __post_init__(self) -> None:
        for field in ("batch", "prompt_tokens", "decode_context", "output_tokens"):
            if getattr(self, field) < 1:
                raise ValueError(f"{field} must be ≥ 1, got {getattr(self, field)}")
        if self.cached_tokens < 0:
            raise ValueError(f"cached_tokens must be ≥ 0, got {self.cached_tokens}")

    @property
    def final_context(self) -> int:
        """Tokens a request holds when its last token is generated: cached + prompt + output."""
        return self.cached_tokens + self.prompt_tokens + self.output_tokens

    @staticmethod
    def from_agent(
        agent: AgentProfile,
        *,
        batch: int = 1,
        context: int | None = None,
        prompt_tokens: int | None = None,
    ) -> Scenario:
        """The agent's last turn: the longest context, which sets the capacity footprint.

        ``context`` overrides the decode context (and caps the cached prefix); ``prompt_tokens``
        the new tokens of the turn.
        """
        prompt = prompt_tokens if prompt_tokens is not None else agent.prompt_tokens
        if context is None:
            last_turn = agent.context_at_turn(agent.turns_per_task)
            cached = max(0, last_turn - prompt)
            decode = max(1, decode_context(cached, prompt, agent.output_tokens))
        else:
            decode = context
            cached = max(0, context - prompt - agent.output_tokens // 2)
        return Scenario(batch, prompt, cached, decode, agent.output_tokens)


@dataclass(frozen=True, slots=True)
class PhaseAnalysis:
    phase: Phase
    cost: PhaseCost  # of the step that runs: at B_max when the requested batch does not fit
    performance: PhasePerformance
    requested_batch: int = 0  # 0: the cost's batch

    @property
    def batch(self) -> int:
        return self.requested_batch or self.cost.batch

    @property
    def capacity_footprint_bytes(self) -> float:
        """CF per request at the requested batch: resident weights / B + that request's KV."""
        return self.cost.weight_resident_bytes / self.batch + self.cost.kv_bytes_per_request

    @property
    def tokens_per_second(self) -> float:
        """Tokens a replica processes per second in this phase (prompt tokens, or generated tokens)."""
        return self.cost.tokens / self.performance.step_seconds

    @property
    def warning(self) -> str | None:
        """What to know when the requested batch does not fit: which batch the figures are for."""
        fits = self.performance.max_batch
        if fits >= self.batch:
            return None
        if fits < 1:
            return (
                f"{self.phase.value}: not even one request fits (the weights alone do not, or its KV cache)"
            )
        what = f"{self.phase.value}: batch {self.batch} does not fit ({fits} request{'s' if fits > 1 else ''} do{'' if fits > 1 else 'es'})"
        if self.cost.batch != self.batch:
            return (
                f"{what}; its FLOPs, bytes, OI, step time and MFU/MBU are for batch {self.cost.batch}, "
                f"its CF per request at batch {self.batch}"
            )
        return f"{what}; its figures are for batch {self.batch} as if it did (only a capacity-bound phase is re-estimated at the batch that fits)"

    def to_dict(self) -> dict[str, Any]:
        c, p = self.cost, self.performance
        return {
            "batch": self.batch,
            "figures_batch": c.batch,
            "new_tokens_per_request": c.new_tokens,
            "context_tokens": c.context_tokens,
            "tp": c.tp,
            "flops": c.flops,
            "dram_bytes": c.dram_bytes,
            "weight_bytes": c.weight_bytes,
            "kv_read_bytes": c.kv_read_bytes,
            "kv_write_bytes": c.kv_write_bytes,
            "activation_bytes": c.activation_bytes,
            "operational_intensity": c.operational_intensity,
            "capacity_footprint_bytes": self.capacity_footprint_bytes,
            "weight_resident_bytes": c.weight_resident_bytes,
            "kv_cache_bytes": c.kv_bytes_per_request,
            "state_bytes": c.state_bytes_per_request,
            "index_key_bytes": c.index_bytes_per_request,
            "regime": p.regime.value,
            "ridge_point": p.ridge_point,
            "attainable_flops_per_second": p.attainable_flops,
            "step_seconds": p.step_seconds,
            "compute_seconds": p.compute_seconds,
            "memory_seconds": p.memory_seconds,
            "communication_seconds": p.communication_seconds,
            "tokens_per_second": self.tokens_per_second,
            "mfu": p.mfu,
            "mbu": p.mbu,
            "max_batch": p.max_batch,
            "ridge_batch": p.ridge_batch,
            "operating_batch": p.operating_batch,
            "memory_per_device_bytes": p.memory_per_device_bytes,
            "operators": [
                {
                    "name": op.name,
                    "flops": op.flops,
                    "weight_bytes": op.weight_bytes,
                    "kv_read_bytes": op.kv_read_bytes,
                    "kv_write_bytes": op.kv_write_bytes,
                    "activation_bytes": op.activation_bytes,
                    "operational_intensity": op.operational_intensity,
                }
                for op in c.operators
            ],
        }


@dataclass(frozen=True, slots=True)
class WorkloadAnalysis:
    model: ModelConfig
    hardware: HardwareSpec
    scenario: Scenario
    precisions: Precisions
    prefill: PhaseAnalysis
    decode: PhaseAnalysis

    @property
    def warnings(self) -> tuple[str, ...]:
        """What the user should know before reading the figures: a context beyond the model's own
        limit, a requested batch that does not fit (the figures are then for the batch that fits)."""
        out: list[str] = []
        limit = self.model.context_limit
        peak = max(self.scenario.decode_context, self.scenario.final_context)
        if limit is not None and peak > limit:
            out.append(
                f"context {peak:,} tokens exceeds {self.model.name}'s limit of {limit:,} "
                f"({context_limit_source(self.model)}); serving engines refuse such a max_model_len"
            )
        for phase in (self.prefill, self.decode):
            if phase.warning:
                out.append(phase.warning)
        return tuple(out)

    @property
    def ttft_seconds(self) -> float:
        return self.prefill.performance.step_seconds

    @property
    def tpot_seconds(self) -> float:
        return self.decode.performance.step_seconds

    def to_dict(self) -> dict[str, Any]:
        m = self.model
        kv = kv_profile(m, self.precisions.kv_cache)
        return {
            "model": {
                "name": m.name,
                "attention": m.attention_kind.value,
                "layers": layer_summary(m),
                "total_params": m.total_params,
                "vision_params": m.vision_params,
                "active_params": m.active_params,
                "active_params_excluding_embedding": m.active_compute_params,
                "context_limit": m.context_limit,
                # What each further token adds once every window is full; the windowed layers'
                # share and cap, and the state layers' fixed state, separately.
                "kv_bytes_per_token": kv.growth_bytes_per_token,
                "kv_window_bytes_per_token": kv.window_bytes_per_token,
                "kv_window_cap_bytes": kv.window_cap_bytes,
                "index_key_bytes_per_token": kv.index_bytes_per_token,
                "state_bytes_per_request": kv.state_bytes,
                "notes": list(m.notes),
            },
            "warnings": list(self.warnings),
            "hardware": {
                "name": self.hardware.name,
                "devices": self.prefill.cost.tp,
                "memory_bytes": self.hardware.memory_bytes,
                "memory_bandwidth_bytes_per_second": self.hardware.memory_bandwidth,
                "peak_flops": self.hardware.peak_for(self.precisions.compute_class),
                "ridge_point": self.prefill.performance.ridge_point,
            },
            "precisions": {
                "weights": self.precisions.weights.value,
                "experts": (self.precisions.experts or self.precisions.weights).value,
                "kv_cache": self.precisions.kv_cache.value,
                "activations": self.precisions.activations.value,
            },
            "scenario": {
                "batch": self.scenario.batch,
                "prompt_tokens": self.scenario.prompt_tokens,
                "cached_tokens": self.scenario.cached_tokens,
                "decode_context": self.scenario.decode_context,
                "output_tokens": self.scenario.output_tokens,
            },
            "ttft_seconds": self.ttft_seconds,
            "tpot_seconds": self.tpot_seconds,
            "phases": {"prefill": self.prefill.to_dict(), "decode": self.decode.to_dict()},
        }


def context_limit_source(model: ModelConfig) -> str:
    """Where a model's context limit comes from, in words."""
    if model.max_context_tokens and model.max_context_tokens != model.max_position_embeddings:
        return f"max_position_embeddings {model.max_position_embeddings or 0:,} extended by RoPE scaling"
    return "max_position_embeddings"


def layer_summary(model: ModelConfig) -> str:
    """The model's layers by type: ``"48 full attention"``, ``"12 full + 36 linear attention"``."""
    parts: list[str] = []
    for g in model.attention_groups:
        kind = {"full_attention": "full", "sliding_attention": "sliding", "chunked_attention": "chunked"}[
            g.type.value
        ]
        what = f"{g.count} {kind}"
        if g.window:
            what += f" ({g.window})"
        if model.sparse_attention is not None:
            what += " sparse" + ("" if g.indexer else ", shared indexer")
        parts.append(what)
    text = " + ".join(parts) + " attention" if parts else ""
    if model.linear_attention is not None:
        text += f" + {model.linear_attention.layers} Gated DeltaNet"
    if model.mamba is not None:
        text += f" + {model.mamba.layers} Mamba2"
    return text


def analyze_phase(
    model: ModelConfig,
    hardware: HardwareSpec,
    phase: Phase,
    *,
    batch: int,
    new_tokens: int,
    context_tokens: int,
    precisions: Precisions,
    tp: int = 1,
    efficiency: Efficiency | None = None,
    utilization: float = DEFAULT_MEMORY_UTILIZATION,
) -> PhaseAnalysis:
    cost = estimate_phase(
        model,
        phase,
        batch=batch,
        new_tokens=new_tokens,
        context_tokens=context_tokens,
        precisions=precisions,
        tp=tp,
    )
    perf = evaluate(
        cost, hardware, compute_class=precisions.compute_class, efficiency=efficiency, utilization=utilization
    )
    return PhaseAnalysis(phase, cost, perf)


def analyze(
    model: ModelConfig,
    hardware: HardwareSpec,
    scenario: Scenario,
    *,
    precisions: Precisions | None = None,
    tp: int = 1,
    efficiency: Efficiency | None = None,
    utilization: float = DEFAULT_MEMORY_UTILIZATION,
) -> WorkloadAnalysis:
    """Estimate prefill and decode of ``scenario`` on ``tp`` devices of ``hardware``.

    ``efficiency=None`` uses the hardware's calibrated efficiency; pass ``IDEAL`` for the pure roofline.
    """
    prec = precisions or Precisions.native(model)

    def run(phase: Phase, batch: int) -> PhaseAnalysis:
        new, cached = (
            (scenario.prompt_tokens, scenario.cached_tokens)
            if phase is Phase.PREFILL
            else (1, scenario.decode_context - 1)
        )
        result = analyze_phase(
            model,
            hardware,
            phase,
            batch=batch,
            new_tokens=new,
            context_tokens=cached,
            precisions=prec,
            tp=tp,
            efficiency=efficiency,
            utilization=utilization,
        )
        # Capacity-bound: only B_max requests fit, so the step that really runs is the one at B_max
        # (its regime stays capacity-bound: B_max is still below the ridge batch).
        perf = result.performance
        if perf.regime is Regime.CAPACITY_BOUND and 1 <= perf.operating_batch < batch:
            return replace(run(phase, perf.operating_batch), requested_batch=batch)
        return result

    prefill = run(Phase.PREFILL, scenario.batch)
    decode = run(Phase.DECODE, scenario.batch)
    return WorkloadAnalysis(model, hardware, scenario, prec, prefill, decode)


__all__ = [
    "IDEAL",
    "PhaseAnalysis",
    "Regime",
    "Scenario",
    "WorkloadAnalysis",
    "analyze",
    "analyze_phase",
    "decode_context",
]
