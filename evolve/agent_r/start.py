"""Opening an `evolve agent-r` run before `run_agent_r` searches: the instances searched and held out chosen, the
executor checked, the run directory locked, the task images present.

    train, held = choose(suite, instances="a,b", held_out="test", limit=None)
    with open_agent_r(cfg, suite, train, held, status=console.status):
        report = run_agent_r(cfg, train, held, policy_loader(Path(cfg.out)))
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Callable, ContextManager, Iterator, Optional

from evolve.agent_r.loop import AgentRRunConfig, check_executor
from evolve.errors import ConfigError
from evolve.run.opening import open_run, parse_ids
from records import TaskInstance
from tasks.suite import Suite
from tasks.suite_images import ensure_suite_images, quiet


def held_out_instances(suite: Suite, text: Optional[str]) -> list[TaskInstance]:
    """--held-out: comma-separated ids; for toolcall also a split (`train`, `test`) or N (the first N of the test
    split)."""
    if not text:
        return []
    if suite.kind == "toolcall" and text.strip() in ("train", "test"):
        return suite.select(None, None, split=text.strip())
    if suite.kind == "toolcall" and text.strip().isdigit():
        return suite.select(None, int(text), split="test") if int(text) else []
    return suite.select(parse_ids(text))


def choose(suite: Suite, instances: Optional[str], held_out: Optional[str],
           limit: Optional[int]) -> tuple[list[TaskInstance], list[TaskInstance]]:
    """(searched, held out): the named instances (default: the suite's; toolcall: its train split) minus the held-out
    ones, cut to `limit`. `ConfigError` when nothing is left to search."""
    held = held_out_instances(suite, held_out)
    held_ids = {i.instance_id for i in held}
    ids = parse_ids(instances)
    pool = suite.select(ids, None, split=None if ids or suite.kind != "toolcall" else "train")
    train = [i for i in pool if i.instance_id not in held_ids]
    train = train[:limit] if limit else train
    if not train:
        raise ConfigError("agent-r: no instances to search (the selection minus --held-out is empty)")
    return train, held


@contextmanager
def open_agent_r(cfg: AgentRRunConfig, suite: Suite, train: list[TaskInstance], held: list[TaskInstance], *,
                 status: Callable[[str], ContextManager] = quiet) -> Iterator[Path]:
    """The executor checked (`--executor ray` has nothing to move for toolcall), the run directory locked while the
    block runs, the images of the searched and held-out instances made present (SWE)."""
    check_executor(cfg)
    out = Path(cfg.out)
    with open_run(out, f"evolve agent-r {cfg.suite}"):
        if cfg.kind == "swe":
            ensure_suite_images(suite, train + held, status=status)
        yield out
