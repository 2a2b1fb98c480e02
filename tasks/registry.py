"""The task suites Evolve knows, by name."""

from __future__ import annotations

from tasks.bundled_images import BundledImageSuite
from tasks.suite import Suite, SuiteUnavailable
from tasks.synth.suite import SynthSuite
from tasks.toolcall.suite import ToolCallSuite


def suite_names() -> list[str]:
    return ["bundled", "toolcall", "swe-bench-verified", "swe-bench-lite"]


def get_suite(name: str, dataset: str | None = None) -> Suite:
    """The suite called `name`; `dataset` (a local SWE-bench dataset file) goes to the SWE-bench suites."""
    if name == "bundled":
        return BundledImageSuite()
    if name == "toolcall":
        return ToolCallSuite()
    if name in ("swe-bench-verified", "swe-bench-lite"):
        from tasks.swebench_suite import SWEBenchSuite  # loads swebench and datasets (seconds)

        return SWEBenchSuite(name, dataset=dataset)
    if name.startswith("synth:"):
        return SynthSuite(name.split(":", 1)[1])
    raise SuiteUnavailable(f"unknown suite {name!r}; the suites are: {', '.join(suite_names())}, and synth:FILE "
                           "(a file `evolve tasks synthesize` wrote)")
