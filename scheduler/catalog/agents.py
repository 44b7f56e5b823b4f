"""Agent token profiles: how many tokens a turn prefills and decodes, and how context snowballs."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class AgentProfile(BaseModel):
    """Token profile of one agent kind.

    Turn ``t`` (1-based) of a task re-sends the history: its context before generation is
    ``initial_context_tokens + (t - 1) * context_growth_per_turn`` tokens, of which
    ``prompt_tokens`` are new (prefilled) when prefix caching keeps the rest, and it generates
    ``output_tokens``. Σ input over T turns ≈ T·C0 + Δ·T(T−1)/2 (the paper's snowballing).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1)
    description: str = ""
    prompt_tokens: int = Field(
        gt=0, description="new prompt tokens per turn (incl. tool definitions on turn 1)"
    )
    output_tokens: int = Field(gt=0, description="generated tokens per turn")
    turns_per_task: int = Field(default=1, gt=0)
    initial_context_tokens: int = Field(
        ge=0, description="context at the first turn (system prompt + tools + task)"
    )
    context_growth_per_turn: int = Field(default=0, ge=0, description="tokens added to the context each turn")
    source: str = Field(min_length=1)

    def context_at_turn(self, turn: int) -> int:
        return self.initial_context_tokens + (turn - 1) * self.context_growth_per_turn

    @property
    def final_context_tokens(self) -> int:
        """Context when the last turn's output is generated: the capacity-relevant length."""
        return self.context_at_turn(self.turns_per_task) + self.output_tokens

    @property
    def mean_context_tokens(self) -> float:
        first, last = self.context_at_turn(1), self.context_at_turn(self.turns_per_task)
        return (first + last) / 2 + self.output_tokens / 2
