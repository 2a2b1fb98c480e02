"""The validation rules, as pure functions of test results (each result parsed by swebench's pytest parser).

* A source is usable only if its suite is green at the base: every test passes in both runs of the
  original (tests whose result differs between the two runs are flaky and left out of every task).
* A bug's FAIL_TO_PASS are the tests that pass in both runs of the original and fail (or vanish, as when the
  bug breaks their module's import) in both runs of the bugged code (the second may run only them); its
  PASS_TO_PASS pass in both runs of the original and in the bugged runs that ran them. A test that passes in
  one bugged run and fails in the other is flaky under the bug and is left out.
  A bug with no FAIL_TO_PASS, or whose run timed out, is rejected.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from swebench.harness.log_parsers.python import parse_log_pytest

PASS = "PASSED"
FAIL = ("FAILED", "ERROR")


def statuses(result: dict) -> dict[str, str]:
    """{test: status} of one run of the container runner, by swebench's pytest log parser."""
    return parse_log_pytest("\n".join(result.get("status", [])), None)


@dataclass
class Baseline:
    """The original code's two runs."""

    passing: list[str]
    """Tests that pass in both runs: the only candidates for FAIL_TO_PASS and PASS_TO_PASS."""
    flaky: list[str] = field(default_factory=list)
    failing: list[str] = field(default_factory=list)
    seconds: float = 0.0
    """The slower run's time (the bugged runs' timeout scales with it)."""

    def restrict(self, files: list[str] | None) -> "Baseline":
        """The baseline of the tests of ``files`` only (all of it for None): what a run of those files is judged
        against."""
        if files is None:
            return self
        keep = set(files)
        return Baseline(passing=[t for t in self.passing if t.split("::")[0] in keep], flaky=self.flaky,
                        failing=self.failing, seconds=self.seconds)

    def refusal(self) -> str | None:
        """Why the source cannot be used (None when it can)."""
        if self.failing:
            more = f" and {len(self.failing) - 3} more" if len(self.failing) > 3 else ""
            return (f"its tests are not green at the base: {len(self.failing)} fail "
                    f"({', '.join(self.failing[:3])}{more})")
        if not self.passing:
            return "no test passed at the base (did the test command collect anything?)"
        return None


def baseline(run1: dict, run2: dict) -> Baseline:
    a, b = statuses(run1), statuses(run2)
    tests = sorted(set(a) | set(b))
    passing = [t for t in tests if a.get(t) == PASS and b.get(t) == PASS]
    flaky = [t for t in tests if a.get(t) != b.get(t)]
    failing = [t for t in tests if a.get(t) in FAIL and b.get(t) in FAIL]
    timed_out = [r for r in (run1, run2) if r.get("timed_out")]
    if timed_out:
        failing = failing or ["(the suite timed out)"]
    return Baseline(passing=passing, flaky=flaky, failing=failing,
                    seconds=max(run1.get("seconds", 0.0), run2.get("seconds", 0.0)))


@dataclass
class Verdict:
    """What the bugged runs say about one bug."""

    fail_to_pass: list[str]
    pass_to_pass: list[str]
    reason: str | None = None
    """Why the bug is rejected (None when it is kept)."""
    flaky: list[str] = field(default_factory=list)


def _failed(status: str | None) -> bool:
    return status is None or status in FAIL


def verdict(base: Baseline, runs: list[dict]) -> Verdict:
    """The bug's verdict from its bugged runs: the first runs the whole suite; a second (optional) may run only
    the first one's FAIL_TO_PASS tests, to see them fail again. A test that fails in one run and passes in
    another is flaky under the bug and left out; PASS_TO_PASS are the tests passing in the first run that no
    later run saw fail."""
    if any(r.get("timed_out") for r in runs):
        return Verdict([], [], reason="the tests timed out on the bugged code")
    maps = [statuses(r) for r in runs]
    if not maps[0]:
        return Verdict([], [], reason=f"no test ran on the bugged code ({runs[0].get('last', '')[:120]})")
    f2p, p2p, flaky = [], [], []
    for test in base.passing:
        first, later = maps[0].get(test), [m.get(test) for m in maps[1:]]
        if _failed(first):
            (flaky if any(s == PASS for s in later) else f2p).append(test)
        elif first == PASS:
            (flaky if any(s in FAIL for s in later) else p2p).append(test)
    if not f2p:
        why = "no test fails with the bug" + (f" ({len(flaky)} flaky)" if flaky else "")
        return Verdict([], p2p, reason=why, flaky=flaky)
    return Verdict(f2p, p2p, flaky=flaky)
