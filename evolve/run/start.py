"""Opening `evolve run SUITE` before its episodes start (`runner.run_swe` and `toolcall_eval.run_toolcall` then
run it): the instances chosen, the run directory locked, a resume with another policy refused, the task images
present, an instance the local sandbox cannot run refused with the reason stored.

    chosen = choose_swe(suite, ids, limit)
    with open_swe_run(cfg, suite, chosen, status=console.status):
        policy, judge = load_policies(out.parent, cfg.policy, cfg.judge)
        report = run_swe(cfg, chosen, policy, on_event, judge_policy=judge)
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Callable, ContextManager, Iterator

from evolve.errors import ConfigError
from evolve.run.local_tasks import local_refusal
from evolve.run.opening import open_run
from evolve.run.runner import RunConfig, check_rewards, refuse_other_policy, store_refusal
from evolve.store import RunStore
from evolve.train.versions import canonical_spec
from records import TaskInstance
from tasks.suite import Suite
from tasks.suite_images import ensure_suite_images, quiet


def choose_swe(suite: Suite, ids: list[str] | None, limit: int | None) -> list[TaskInstance]:
    """The instances to run (named `ids`, else all, cut to `limit`); `ConfigError` when none are left."""
    chosen = suite.select(ids, limit)
    if not chosen:
        dataset = getattr(suite, "dataset", None)
        raise ConfigError(f"no instances to run: {suite.name}{' (' + str(dataset) + ')' if dataset else ''} has none"
                          + (" matching --instances" if ids else ""))
    return chosen


def choose_toolcall(suite: Suite, ids: list[str] | None, limit: int | None,
                    split: str | None) -> tuple[list[TaskInstance], str | None]:
    """(instances, split) of a toolcall run: the test split by default; named ids are found in either split
    (Agent-R holds out train ids). `ConfigError` when none are left."""
    split = split or (None if ids else "test")
    chosen = suite.select(ids, limit, split=split)
    if not chosen:
        where = f"the toolcall {split} split" if split else "the toolcall suite"
        raise ConfigError(f"no instances to run: {where} has none" + (" matching --instances" if ids else ""))
    return chosen, split


@contextmanager
def open_toolcall_run(out: Path, policy: str) -> Iterator[str]:
    """The run directory locked, a resume with another policy refused. Yields the policy spec the run records
    (`version:latest` as the `version:ID` it names now, so a resume compares ids)."""
    with open_run(out, "evolve run toolcall"):
        policy = canonical_spec(policy, out.parent)
        refuse_other_policy(out, policy)
        yield policy


@contextmanager
def open_swe_run(cfg: RunConfig, suite: Suite, chosen: list[TaskInstance], *,
                 status: Callable[[str], ContextManager] = quiet) -> Iterator[Path]:
    """Everything `run_swe` needs before a policy loads, refused early where it cannot run: reward weights the run
    cannot produce (before the lock), the directory locked (held until the block ends), a resume with another
    policy, the task images made present (docker), instances that exist only as images (local: stored as not
    run, with the reason). `cfg.policy` becomes the spec the run records (`version:latest` as the `version:ID`
    it names now, so a resume compares ids). `status(what)` wraps the slow steps."""
    check_rewards(cfg, judge=cfg.judge is not None)
    out = Path(cfg.out)
    with open_run(out, f"evolve run {cfg.suite}"):
        cfg.policy = canonical_spec(cfg.policy, out.parent)
        refuse_other_policy(out, cfg.policy)  # before building images or loading a policy that cannot be used
        if cfg.sandbox.backend == "docker":
            ensure_suite_images(suite, chosen, status=status)
        elif (why := local_refusal(chosen)):
            with RunStore(out) as store:
                store_refusal(store, cfg, chosen, why)
            raise ConfigError(why)
        yield out
