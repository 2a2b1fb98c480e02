"""`loop.yaml`: every setting of `evolve loop` as one pydantic model (a docstring per field).

Shipped defaults: `evolve/loop/configs/toolcall.yaml` (the tool-calling suite, sized for a 2-core CPU) and
`evolve/loop/configs/swe.yaml` (SWE suites: bundled, swe-bench-*). A user's `--config FILE` is read on top of
the suite's default, then the command-line options on top of both.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from evolve.errors import ConfigError

CONFIGS = Path(__file__).parent / "configs"
Selection = Union[list[str], float, int, None]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SplitConfig(_Strict):
    """Which instances each part of the loop sees. Each of `train`, `search` and `held_out` is a list of ids, a
    count (the first N of its pool), a fraction in (0, 1) of its pool, or null (the default below)."""

    held_out: Selection = None
    """Instances only the gate sees. Pool: toolcall's `test` split; other suites: every instance, grouped by
    `by` and shuffled with `seed`. null: toolcall's whole test split; other suites: a quarter of the pool."""
    train: Selection = None
    """Instances whose rollouts (k attempts each) become the generation's training data. Pool: toolcall's
    `train` split; other suites: what `held_out` leaves. null: all of the pool."""
    search: Selection = None
    """Instances the scheduler evaluates nodes on. null: the training instances (their scores then favour weight
    children that trained on them; the gate on `held_out` is what protects the champion). Otherwise taken from
    what `train` leaves of its pool."""
    by: Literal["instance", "repository"] = "instance"
    """Unit of the split for non-toolcall suites: single instances, or whole repositories (evaluation on
    repositories never trained on)."""
    seed: int = 0
    """Seed of the shuffle of the pool (non-toolcall suites)."""


class RolloutConfig(_Strict):
    """Stage 1: the champion on the training instances."""

    attempts: int = Field(default=4, ge=1)
    """Attempts per instance (each its own scored trajectory; the GRPO group)."""
    temperature: float = Field(default=1.0, ge=0)
    """Sampling temperature of the attempts (> 0, or the group's attempts are one answer repeated)."""
    max_tokens: int = Field(default=256, ge=1)
    """Tokens per policy call (toolcall: the answer; SWE: each step)."""
    max_steps: Optional[int] = Field(default=None, ge=1)
    """SWE: step budget of an episode (null: the variant's)."""
    batch_size: int = Field(default=8, ge=1)
    """toolcall: prompts sampled together."""


class CurriculumStage(_Strict):
    """Which training instances each generation's rollouts (and so its GRPO groups) run on: all of them (`off`),
    or `tasks` of them drawn by the Self-Evolving Curriculum (`sec`: a bandit over task categories fed the mean
    absolute advantage of each category's groups after the rollouts) or by `uniform` categories. Categories: a
    synthesised row's source x bug family, else repository x bug kind (bundled) or the task's kind (toolcall).
    The bandit's state after every generation is a `curriculum` document of the loop's run (the TUI's weights
    over time; the same records as `evolve train grpo --curriculum`)."""

    mode: Literal["off", "sec", "uniform"] = "off"
    """`off` (every training instance every generation), `sec` or `uniform` (`--curriculum`)."""
    tasks: Optional[int] = Field(default=None, ge=1)
    """Training instances drawn per generation (null: half of the training split, at least one)."""
    alpha: float = Field(default=0.5, gt=0, le=1)
    """Learning rate of the categories' values (SEC's TD(0) step)."""
    temperature: float = Field(default=0.2, gt=0)
    """Boltzmann temperature of the draw: lower concentrates on the categories with most signal."""


class SEAgentStage(_Strict):
    """Stage 2a: SE-Agent's guided retries of the instances the champion failed (SWE suites only)."""

    enabled: bool = False
    """Run it (it needs an operator policy able to write strategies; off by default on a small CPU)."""
    iterations: int = Field(default=2, ge=1)
    """SE-Agent iterations (1: the pilots only)."""
    pilots: int = Field(default=2, ge=1)
    """Diverse pilots per failed instance."""
    operators: list[str] = Field(default_factory=lambda: ["revision"])
    """Operator schedule of iterations 2.."""
    limit: Optional[int] = Field(default=4, ge=1)
    """Most failed instances retried per generation."""


class AgentRStage(_Strict):
    """Stage 2b: Agent-R's search on the instances the champion failed: revision splices and good paths."""

    enabled: bool = True
    """Run it."""
    limit: Optional[int] = Field(default=4, ge=1)
    """Most failed instances searched per generation."""
    rollouts: int = Field(default=2, ge=1)
    """MCTS iterations per instance."""
    n_gen: int = Field(default=4, ge=1)
    """Responses sampled per expansion."""
    max_depth: int = Field(default=3, ge=1)
    """Most steps on a search path (toolcall: answers)."""
    max_pairs: int = Field(default=2, ge=1)
    """Most splices per instance."""
    alpha: float = Field(default=0.5, ge=0, le=1)
    """Pairs need value(high) > alpha."""
    beta: float = Field(default=0.2, ge=0, le=1)
    """Pairs need value(high) - value(low) > beta."""
    temperature: float = Field(default=1.0, gt=0)
    """Sampling temperature of the search."""


class EvolutionConfig(_Strict):
    """Stage 2: trajectory evolution on the failed instances; its outputs are this generation's training data."""

    se_agent: SEAgentStage = Field(default_factory=SEAgentStage)
    """SE-Agent's guided retries (more positives)."""
    agent_r: AgentRStage = Field(default_factory=AgentRStage)
    """Agent-R's revision splices."""


class TrainingConfig(_Strict):
    """How every weight child (and the warm start) trains: shared settings."""

    lr: float = Field(default=1e-4, gt=0)
    """Peak learning rate of SFT (GRPO has its own, `grpo.lr`)."""
    max_len: int = Field(default=1024, ge=64)
    """Most tokens of one training sequence."""
    lora: bool = True
    """Train a LoRA adapter (false: every weight)."""
    lora_r: int = Field(default=16, ge=1)
    """LoRA rank."""
    batch_size: int = Field(default=8, ge=1)
    """Sequences per optimiser step."""
    micro_batch_size: int = Field(default=4, ge=1)
    """Sequences per forward/backward pass."""
    device: str = "auto"
    """`auto`, `cpu`, `cuda`, ... (`--train-device`)."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """Weights' dtype while training."""
    num_threads: Optional[int] = Field(default=None, ge=1)
    """CPU threads of torch (null: torch's choice)."""
    save_every: int = Field(default=10, ge=1)
    """Checkpoint every this many optimiser steps (a killed training resumes from the last one)."""
    seed: int = 0
    """Seed of data order and adapter initialisation."""


class SFTStage(_Strict):
    """Weight children by rejection-sampling SFT: successes, guided-retry successes and Agent-R splices."""

    enabled: bool = True
    """Offer `sft` expansions."""
    steps: int = Field(default=20, ge=1)
    """Optimiser steps of one SFT child."""
    min_reward: float = 1.0
    """Rollouts and retries with at least this reward are successes (SWE: resolved = 1; ToolRL total in [-3, 4]);
    splices and good paths are kept regardless. Meta-agent trajectories are never used."""


class GRPOStage(_Strict):
    """Weight children by GRPO on the rollouts' groups (k attempts per instance)."""

    enabled: bool = True
    """Offer `grpo` expansions."""
    steps: int = Field(default=10, ge=1)
    """Optimiser steps of one GRPO child."""
    lr: float = Field(default=2e-5, gt=0)
    """Peak learning rate."""
    kl_coef: float = Field(default=0.0, ge=0)
    """k3 KL to the parent (0: no reference model is loaded)."""
    epochs: int = Field(default=1, ge=1)
    """Passes over the groups."""


class CodeStage(_Strict):
    """Code children: HGM's self-modification of the agent variant by the meta-agent (SWE suites)."""

    enabled: bool = True
    """Offer `code` expansions (toolcall has no agent variant to edit: there it must be off)."""
    meta_max_steps: int = Field(default=30, ge=1)
    """Step budget of the meta-agent's edit episode."""
    smoke: bool = True
    """Validate a child with one ungraded smoke episode."""
    privileged_diagnosis: bool = False
    """Show the diagnosis the hidden tests' names and results."""


class SearchConfig(_Strict):
    """Stage 3: one HGM scheduler over nodes of every kind, rooted at the champion."""

    budget: int = Field(default=12, ge=1)
    """Evaluations (one node on one search task) per generation; the champion's own are free."""
    alpha: float = Field(default=0.6, gt=0, le=1)
    """Widening exponent: expand when N^alpha >= nodes."""
    initial_expansions: int = Field(default=2, ge=0)
    """Expansions of the champion before widening takes over."""
    max_expansions: Optional[int] = Field(default=None, ge=1)
    """Most expansion attempts per generation (null: `budget`)."""
    workers: int = Field(default=2, ge=1)
    """Expansions and evaluations in parallel."""
    temperature: float = Field(default=0.0, ge=0)
    """toolcall: sampling temperature of an evaluation (0: greedy)."""
    pass_threshold: float = Field(default=0.75, ge=0, le=1)
    """toolcall: an evaluation passes when ToolRL's total, rescaled to [0, 1], reaches this (0.75: right format and
    half-right calls or better; 1: exact)."""
    kind_prior_weight: float = Field(default=0.5, ge=0)
    """Weight of the earlier generations' children in the choice of expansion kind (0: each generation learns
    afresh; 1: full weight)."""


class PolicyConfig(_Strict):
    """Which policies act, train, edit and judge."""

    policy: str = "hf:gemma3-270m"
    """The policy the loop trains and the agent acts with (`hf:`, `version:ID`; `--policy`)."""
    rollout_backend: Literal["hf", "llamacpp", "vllm", "as-is"] = "hf"
    """How a trained version samples: `hf` (transformers on CPU or GPU), `llamacpp` (the version exported to GGUF;
    only models llama.cpp reads, e.g. the embedded Gemma 3), `vllm` (one engine, the version's LoRA adapter
    swapped in per call; a GPU), or `as-is` (specs load as written: for scripted policies)."""
    meta_policy: Optional[str] = None
    """Policy of HGM's diagnosis and edit (null: each node's own policy; `--meta-policy`)."""
    judge: Optional[str] = None
    """Policy spec of an LLM judge that also scores SWE rollouts (null: none)."""
    operator_policy: Optional[str] = None
    """SE-Agent's operator policy (null: the champion's policy)."""


class GateConfig(_Strict):
    """Stage 4: the held-out gate."""

    test: Literal["auto", "t", "sign", "bootstrap"] = "auto"
    """Paired test of candidate minus champion per held-out instance: `t` (paired t-test), `sign` (exact sign test),
    `bootstrap` (percentile interval, p from the bootstrap distribution); `auto`: sign for 0/1 scores, else t."""
    alpha: float = Field(default=0.05, gt=0, lt=1)
    """Significance level of `worse` (one-sided) and of the interval (1 - alpha)."""
    rule: Literal["not_worse", "better"] = "not_worse"
    """`not_worse`: the candidate replaces the champion unless significantly worse; `better`: only when significantly
    better (stricter against drift)."""
    min_held_out: int = Field(default=5, ge=1)
    """Fewer scored held-out instances than this: the champion is kept."""
    bootstrap: int = Field(default=2000, ge=100)
    """Resamples of the bootstrap test."""
    temperature: float = Field(default=0.0, ge=0)
    """toolcall: sampling temperature of held-out answers (0: greedy, paired exactly)."""


class WarmStartConfig(_Strict):
    """Generation 0: SFT on demonstrations before the loop (a policy that cannot act yet has nothing to learn from)."""

    enabled: bool = False
    """Run it (its row in the report is generation 0)."""
    steps: int = Field(default=30, ge=1)
    """Optimiser steps."""
    lr: Optional[float] = Field(default=None, gt=0)
    """Peak learning rate (null: `training.lr`)."""
    limit: Optional[int] = Field(default=None, ge=1)
    """Most demonstrations (null: all). Toolcall's come from its train split minus the search instances, the
    training instances first: `limit` larger than `splits.train` warm-starts on instances the rollouts skip."""
    runs: list[str] = Field(default_factory=list)
    """Run directories of demonstrations (SWE: e.g. synthesized tasks with known fixes); toolcall uses the
    training instances' reference answers when empty."""
    gate: bool = True
    """Gate the warm-started policy against the starting one on the held-out instances (false: always adopt)."""


class LoopConfig(_Strict):
    """One `evolve loop` run: the suite, its splits, the generations and every stage's budget and switch."""

    suite: str = "toolcall"
    """Suite (`evolve tasks` lists them)."""
    dataset: Optional[str] = None
    """Local SWE-bench dataset file for the swe-bench suites."""
    variant: Optional[str] = None
    """Agent variant directory of the first node (null: the default variant; SWE suites)."""
    generations: int = Field(default=2, ge=1)
    """Generations to run (a resumed run may be given more)."""
    splits: SplitConfig = Field(default_factory=SplitConfig)
    """Which instances train, search and gate."""
    warm_start: WarmStartConfig = Field(default_factory=WarmStartConfig)
    """Generation 0."""
    rollouts: RolloutConfig = Field(default_factory=RolloutConfig)
    """Stage 1."""
    curriculum: CurriculumStage = Field(default_factory=CurriculumStage)
    """Which training instances stage 1 runs on each generation."""
    evolution: EvolutionConfig = Field(default_factory=EvolutionConfig)
    """Stage 2."""
    sft: SFTStage = Field(default_factory=SFTStage)
    """Weight children by SFT."""
    grpo: GRPOStage = Field(default_factory=GRPOStage)
    """Weight children by GRPO."""
    code: CodeStage = Field(default_factory=CodeStage)
    """Code children."""
    search: SearchConfig = Field(default_factory=SearchConfig)
    """Stage 3."""
    gate: GateConfig = Field(default_factory=GateConfig)
    """Stage 4."""
    policies: PolicyConfig = Field(default_factory=PolicyConfig)
    """Policies."""
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    """Training settings shared by every weight child."""
    executor: str = "local"
    """Where sandbox work runs: `local`, `ray` or `ray=ADDRESS` (rollouts, SE-Agent and Agent-R's SWE branches;
    the search's evaluations and the gate run here)."""
    sandbox: Literal["docker", "local"] = "docker"
    """Sandbox backend of SWE suites."""
    workers: int = Field(default=2, ge=1)
    """Parallel episodes of the rollouts and the gate."""
    seed: int = 0
    """Seed of the search's random choices."""

    @model_validator(mode="after")
    def _some_child(self) -> "LoopConfig":
        if not (self.sft.enabled or self.grpo.enabled or self.code.enabled):
            raise ValueError("every kind of child is off (sft, grpo, code): the loop would have nothing to try")
        return self

    def kinds(self) -> list[str]:
        """The enabled expansion kinds, in a fixed order."""
        return [k for k, on in (("code", self.code.enabled), ("sft", self.sft.enabled), ("grpo", self.grpo.enabled))
                if on]


def default_config_path(kind: str) -> Path:
    """The shipped default of a suite kind (`toolcall` or `swe`)."""
    return CONFIGS / ("toolcall.yaml" if kind == "toolcall" else "swe.yaml")


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _read(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path} is not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of settings")
    return data


def load_loop_config(kind: str, path: Path | None = None, **overrides: Any) -> LoopConfig:
    """The suite kind's shipped default, then `path` on top, then `overrides` (dotted keys such as
    `training.device`; None values ignored). A bad setting is a one-line `ConfigError` naming it."""
    data = _read(default_config_path(kind))
    if path is not None:
        data = _merge(data, _read(path))
    for key, value in overrides.items():
        if value is None:
            continue
        *parents, last = key.split(".")
        at = data
        for p in parents:
            at = at.setdefault(p, {})
        at[last] = value
    try:
        return LoopConfig.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(x) for x in err["loc"]) or "config"
        msg = str(err["msg"]).removeprefix("Value error, ")
        raise ConfigError(f"bad loop setting {where}: {msg}") from None
