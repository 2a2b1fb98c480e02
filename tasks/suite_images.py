"""Making the images of a suite's chosen instances present before they run."""

from __future__ import annotations

import contextlib
from typing import Callable, ContextManager, Optional

from records import TaskInstance
from tasks.bundled.materialize import materialize
from tasks.images import ensure_images, ensure_swebench_images
from tasks.suite import Suite


def quiet(what: str) -> ContextManager:
    """A `status` that shows nothing (the default of every `status=` callback)."""
    return contextlib.nullcontext()


def ensure_suite_images(suite: Suite, chosen: list[TaskInstance], *, pull: bool = True,
                        task_repo: Optional[str] = None, force: bool = False,
                        status: Callable[[str], ContextManager] = quiet) -> dict[str, list[str]]:
    """Make the images of the chosen instances present: the bundled suite builds its own; SWE-bench images
    are found under any of their names, pulled where a registry answers, or built with swebench's image
    builder from a task repository; otherwise a one-line error says exactly which image to `docker load`.
    `status(what)` wraps each stage (the CLI shows a spinner with it). Returns image names by what was done.
    A suite that makes its own images (`synth:FILE`: `ensure_images`) makes them."""
    if hasattr(suite, "ensure_images"):
        with status(f"making {len(chosen)} task image(s)"):
            return suite.ensure_images(chosen, force=force)
    if hasattr(suite, "build_images"):
        with status("building task images"):
            return {"built": ensure_images(chosen, materialize, force=force)}
    if suite.kind != "swe":
        return {}
    with status(f"looking for {len(chosen)} SWE-bench image(s)"):
        return ensure_swebench_images(chosen, pull=pull, task_repo=task_repo, force=force)
