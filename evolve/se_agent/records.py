"""SE-Agent's records: what one attempt is, what could be seen of its outcome, its summary, operator outputs
and selection verdicts. All are stored as run-store documents (`se-agent:*`), keyed by instance."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

DOC_SLOT = "se-agent:slot"
"""Document kind: which trajectory fills an (iteration, instance, slot) and whether it is finished."""
DOC_SUMMARY = "se-agent:summary"
"""Document kind: the pool entry (summary + visible outcome) of one executed trajectory."""
DOC_OPERATOR = "se-agent:operator"
"""Document kind: one operator's output for one instance and iteration."""
DOC_SELECTION = "se-agent:selection"
"""Document kind: the final choice among an instance's candidates."""
DOC_BASELINE = "se-agent:baseline"
"""Document kind: the visible tests' results on the unpatched repository (per instance)."""


def slot_key(instance_id: str, iteration: int, slot: int) -> str:
    """Key of one attempt: instance first, so `documents(key_prefix=f"{instance_id}/")` is the instance's pool."""
    return f"{instance_id}/{iteration:02d}/{slot:02d}"


def instance_prefix(instance_id: str) -> str:
    return f"{instance_id}/"


class Attempt(BaseModel):
    """What one trajectory is asked to do: where it sits in the run and how its prompt differs."""

    instance_id: str
    """Task instance."""
    iteration: int
    """1 for pilots, then one per operator iteration."""
    slot: int = 0
    """Pilot number in iteration 1 (0 in later iterations)."""
    origin: str = "se-agent:pilot"
    """`se-agent:pilot`, `se-agent:revision`, `se-agent:recombination`, `se-agent:refinement`, `se-agent:resample`."""
    temperature: float = 0.0
    """Sampling temperature of the policy."""
    seed: int = 0
    """Sampling seed."""
    planning: str = ""
    """Planning prompt appended to the instance (first user) message; empty for none."""
    strategy: str = ""
    """Operator output appended to the system message; empty for pilots."""
    operator_key: str = ""
    """Key of the `se-agent:operator` document the strategy came from."""
    parent_id: str | None = None
    """Trajectory this attempt grows from (the operator's main source), for the lineage."""
    branch_step: int = 0
    """With `--branch`: the parent's first `branch_step` steps are replayed in the sandbox and the attempt
    continues from there with the new strategy (0: a fresh episode)."""

    @property
    def key(self) -> str:
        return slot_key(self.instance_id, self.iteration, self.slot)


class VisibleOutcome(BaseModel):
    """What could be seen of an attempt without the hidden tests."""

    patch_produced: bool = False
    """The trajectory ended with a non-empty diff."""
    applies: bool | None = None
    """The patch applies to a fresh checkout (None: not checked, e.g. no patch)."""
    tests: Literal["pass", "fail", "none"] = "none"
    """The repository's own visible tests with the patch: `pass` (no test that passed unpatched fails),
    `fail`, or `none` (no visible test command, or not run)."""
    tests_passed: int = 0
    """Visible tests passing with the patch."""
    regressions: list[str] = Field(default_factory=list)
    """Visible tests that passed unpatched and fail with the patch."""
    repro: Literal["pass", "fail", "none"] = "none"
    """The agent's own reproduction script, run on the patched checkout: exit 0 is `pass`."""
    repro_path: str = ""
    """Which script was run as the reproduction."""
    final_status: str = ""
    """How the episode ended (`submitted`, `budget_exhausted`, ...)."""
    notes: list[str] = Field(default_factory=list)
    """What could not be checked and why."""

    @property
    def score(self) -> tuple[int, ...]:
        """Ranking key, higher is better: a patch that applies, then tests, then the reproduction, then a submit."""
        return (int(self.patch_produced and self.applies is not False), int(self.tests == "pass"),
                -len(self.regressions), int(self.repro == "pass") - int(self.repro == "fail"),
                int(self.final_status == "submitted"))

    @property
    def failed(self) -> bool:
        """Visibly failed: no patch, a patch that does not apply, broken visible tests or a failing reproduction."""
        return (not self.patch_produced or self.applies is False or self.tests == "fail" or self.repro == "fail")

    def label(self) -> str:
        return "failed" if self.failed else "promising"


class SummaryFields(BaseModel):
    """The fields a summariser LLM must return: the strict JSON schema of a summary."""

    model_config = ConfigDict(extra="forbid", strict=True)

    approach: str
    """One or two sentences: what the attempt tried."""
    files_touched: list[str]
    """Files it changed or meant to change."""
    key_changes: list[str]
    """The changes that matter, one per item."""
    tools_used: list[str]
    """Tools it relied on."""
    reasoning_pattern: str
    """How it proceeded (e.g. reproduce, locate, edit, test)."""
    assumptions: list[str]
    """What it took for granted about the bug or the code."""


class PoolEntry(SummaryFields):
    """One executed trajectory in the instance's pool: its summary and visible outcome."""

    model_config = ConfigDict(extra="forbid", strict=False)

    instance_id: str
    """Task instance (every lookup is keyed by it)."""
    trajectory_id: str
    """The trajectory summarised."""
    iteration: int
    """Iteration that produced it."""
    slot: int = 0
    """Pilot number (iteration 1)."""
    origin: str = ""
    """Which operator (or pilot) produced the trajectory."""
    outcome: VisibleOutcome = Field(default_factory=VisibleOutcome)
    """Visible outcome (never hidden tests)."""
    summariser: Literal["llm", "fallback"] = "fallback"
    """Whether the operator policy wrote the summary or the deterministic fallback did."""
    fallback_reason: str = ""
    """Why the fallback was used (invalid JSON, schema mismatch, policy error)."""
    compression: dict[str, int] = Field(default_factory=dict)
    """chars_in / chars_out / chars_cut / clipped of the trajectory text given to the summariser."""


class OperatorOutput(BaseModel):
    """One operator's product for one instance: strategy text added to that instance's agent prompt."""

    instance_id: str
    """Task instance it is for."""
    iteration: int
    """Iteration whose trajectory uses it."""
    operator: str
    """`revision`, `recombination` or `refinement`."""
    text: str
    """Strategy text appended to the system message."""
    sources: list[str] = Field(default_factory=list)
    """Trajectory ids it was built from (all of this instance)."""
    prompt: str = ""
    """The operator prompt sent to the LLM."""
    fallback: bool = False
    """True when the LLM failed and the deterministic fallback wrote the text."""
    fallback_reason: str = ""
    """Why."""
    chars_cut: int = 0
    """Characters cut from the inputs to fit the operator prompt."""


class SelectionVerdict(BaseModel):
    """The final choice among an instance's candidates, from visible information only."""

    instance_id: str
    """Task instance."""
    candidates: list[str]
    """Trajectory ids considered, in pool order."""
    top: list[str] = Field(default_factory=list)
    """Those in the best visible tier."""
    method: Literal["visible", "judge", "undecided", "none"] = "none"
    """`visible` (one best by visible signals), `judge` (pairwise judge broke the tie), `undecided` (the
    judge failed or tied: the tie-break chose), `none` (no candidates)."""
    selected: str | None = None
    """Trajectory id whose patch is the prediction."""
    tie_break: str = ""
    """How an undecided tie was broken (never by position)."""
    wins: dict[str, float] = Field(default_factory=dict)
    """Judge wins per candidate (both orders must agree for a win; ties give half)."""
    comparisons: list[dict] = Field(default_factory=list)
    """Each pairwise judgment: a, b, verdict in both orders."""
