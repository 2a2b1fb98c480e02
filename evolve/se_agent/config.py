"""Configuration of one `evolve se-agent` run."""

from __future__ import annotations

from typing import Optional

from pydantic import BaseModel, Field, field_validator

from agent.policy import DEFAULT_POLICY
from agent.variant import DEFAULT_VARIANT
from evolve.run.executor import ExecutorConfig
from evolve.se_agent.operators import OPERATORS
from sandbox import SandboxConfig


class SEAgentConfig(BaseModel):
    """SE-Agent over a suite: pilots, operator iterations, visible selection, hidden-test report."""

    suite: str = "bundled"
    """Suite name (`evolve tasks` lists them)."""
    instances: list[str] = Field(default_factory=list)
    """Instance ids (empty: all, cut to `limit`)."""
    limit: Optional[int] = None
    """Most instances."""
    dataset: Optional[str] = None
    """Local SWE-bench dataset file for the swe-bench suites."""
    iterations: int = Field(default=3, ge=1)
    """Iterations: the first runs the pilots, each later one applies the next operator of `operators`."""
    pilots: int = Field(default=3, ge=1)
    """Diverse pilot trajectories per instance in iteration 1 (different temperatures, seeds, planning prompts)."""
    operators: list[str] = Field(default_factory=lambda: list(OPERATORS))
    """Operator schedule, cycled over iterations 2..K; empty: independent re-sampling (the ablation baseline)."""
    branch: bool = False
    """Trajectory-level operators: continue the operator's source trajectory from the step before its first
    edit (its exploration replayed in a fresh sandbox) with the new strategy, instead of starting afresh."""
    policy: str = DEFAULT_POLICY
    """Policy spec of the agent."""
    operator_policy: Optional[str] = None
    """Policy spec that summarises, runs the operators and judges (None: the agent's policy)."""
    judge: bool = True
    """Break ties of the visible selection with the pairwise judge (the operator policy)."""
    variant: str = str(DEFAULT_VARIANT)
    """Agent variant directory."""
    max_steps: Optional[int] = None
    """Override the variant's step budget."""
    max_tokens_per_step: Optional[int] = None
    """Override the variant's tokens per step."""
    sandbox: SandboxConfig = Field(default_factory=SandboxConfig)
    """How sandboxes start."""
    workers: int = Field(default=2, ge=1)
    """Attempts run in parallel (their policy calls are batched)."""
    executor: ExecutorConfig = Field(default_factory=ExecutorConfig)
    """Where the sandbox work runs: threads here (`local`) or tasks on a Ray cluster (`ray`: every attempt's
    episode, branch attempts included, the visible baseline and checks, the hidden grading; the operators, the
    summaries, the selection and the run store stay here)."""
    infra_retries: int = Field(default=2, ge=0)
    """Re-runs of an attempt whose episode failed for the infrastructure's reasons (not the agent's)."""
    seed: int = 0
    """Base sampling seed of the attempts."""
    grade: bool = True
    """Grade every candidate with the hidden tests, for the report only (never for selection)."""
    summary_max_chars: int = Field(default=12000, ge=1000)
    """Characters of trajectory text given to the summariser (the rest is cut and counted)."""
    operator_max_chars: int = Field(default=12000, ge=1000)
    """Characters of pool text given to an operator."""
    operator_max_tokens: int = Field(default=400, ge=16)
    """Tokens an operator, the summariser or the judge may generate."""
    out: str = "runs/se-agent"
    """Run directory; the same one resumes (a `{timestamp}` in it resumes the latest unfinished match)."""

    @field_validator("operators")
    @classmethod
    def _known(cls, ops: list[str]) -> list[str]:
        bad = [o for o in ops if o not in OPERATORS]
        if bad:
            raise ValueError(f"unknown operator {bad[0]!r}; the operators are {', '.join(OPERATORS)} (or none)")
        return ops

    def operator_for(self, iteration: int) -> str | None:
        """The operator of `iteration` (None for the pilots and for re-sampling)."""
        if iteration <= 1 or not self.operators:
            return None
        return self.operators[(iteration - 2) % len(self.operators)]
