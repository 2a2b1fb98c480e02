"""One long-lived sandbox of a source's image: the baseline, batches of bugged runs, and gold checks.

Every bug of a source is tested in the same container (no container start per bug): the container runner
(`container_runner.py`) runs the suite once per bug, many bugs per call. A kept bug is committed there, its
gold patch graded by `tasks.grading.grade_in` (the steps `grade` takes in a fresh sandbox: apply chain, guard,
the row's eval script, swebench's parser and verdict), and the repository reset to the source's commit.
"""

from __future__ import annotations

import json
import logging
import shlex
from pathlib import Path

from records import TaskInstance, TestReport
from sandbox import Sandbox, SandboxConfig, SandboxError, start_sandbox
from tasks.grading import grade_in
from tasks.synth import outcomes
from tasks.synth.coverage import Coverage
from tasks.synth.env_image import commit_bug_command
from tasks.synth.sources import HASH_SEED

log = logging.getLogger(__name__)

RUNNER = Path(__file__).with_name("container_runner.py")
RUNNER_PATH = "/tmp/evolve-synth-runner.py"
JOB_PATH = "/tmp/evolve-synth-job.json"
OUT_PATH = "/tmp/evolve-synth-out.jsonl"


class SourceSession:
    """A source's sandbox, reset to the source's commit between bugs."""

    def __init__(self, image: str, commit: str, pytest_args: list[str], config: SandboxConfig | None = None):
        self.image, self.commit, self.args = image, commit, pytest_args
        self.config = config or SandboxConfig()
        self.sb: Sandbox | None = None
        self.timeout = 120.0
        """Seconds one run of the suite may take (set from the baseline)."""

    def __enter__(self) -> "SourceSession":
        self.sb = start_sandbox(self.config, image=self.image)
        self.sb.write_file(RUNNER_PATH, RUNNER.read_bytes())
        head = self.sb.exec("git rev-parse HEAD", timeout=60).output.strip()
        if head != self.commit:
            raise SandboxError(f"{self.image} holds {head[:12]} at /testbed, not the source's {self.commit[:12]}")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.sb is not None:
            self.sb.stop()

    def read(self, path: str) -> bytes:
        return self.sb.read_file(path)

    def run(self, bugs: list[dict], timeout: float | None = None) -> dict[str, dict]:
        """Run the suite once per bug (`{"id", "file", "content"}`; no `file`: the original). Results by id; a
        bug the call did not reach (the runner died) has none."""
        if not bugs:
            return {}
        per = timeout or self.timeout
        self.sb.write_file(JOB_PATH, json.dumps({"args": self.args, "timeout": per, "bugs": bugs}))
        r = self.sb.exec(f"{HASH_SEED} python3 {RUNNER_PATH} {JOB_PATH} {OUT_PATH}", timeout=per * len(bugs) + 60,
                         max_output=20_000)
        try:
            text = self.sb.read_file(OUT_PATH).decode(errors="replace")
        except SandboxError:
            text = ""
        results = {}
        for line in text.splitlines():
            try:
                item = json.loads(line)
            except json.JSONDecodeError:
                continue
            results[item["id"]] = item
        if len(results) < len(bugs):  # the runner died or ran out of time: the file it was on may be bugged
            log.warning("the runner returned %d of %d results (exit %s): %s", len(results), len(bugs), r.exit_code,
                        r.output[-300:])
            self.reset()
        return results

    def baseline(self, code_files: list[str]) -> tuple[outcomes.Baseline, Coverage]:
        """Two runs of the original (the first records what the tests ran of ``code_files``): its baseline and
        coverage. The timeout of later runs is set from the untraced run."""
        res = self.run([{"id": "base-1", "coverage": list(code_files)}, {"id": "base-2"}], timeout=900)
        if len(res) < 2:
            return outcomes.Baseline(passing=[], failing=["(the runner failed at the base)"]), Coverage()
        base = outcomes.baseline(res["base-1"], res["base-2"])
        self.timeout = max(20.0, 4 * res["base-2"].get("seconds", base.seconds) + 10)
        return base, Coverage.from_json(res["base-1"].get("covered")) or Coverage()

    def commit_bug(self, path: str, content: bytes) -> tuple[str, str]:
        """Commit the bug on the source's commit; returns (bug commit, gold patch = the reverse diff)."""
        self.sb.write_file(path, content)
        r = self.sb.exec(commit_bug_command(), timeout=120)
        bug = r.output.strip().splitlines()[-1] if r.exit_code == 0 and r.output.strip() else ""
        if len(bug) != 40:
            raise SandboxError(f"could not commit the bug: {r.output[-300:]}")
        gold = self.sb.exec(f"git -c core.quotepath=off diff --no-color {bug} {self.commit} -- {shlex.quote(path)}",
                            timeout=120, max_output=4_000_000)
        if gold.exit_code != 0 or not gold.output.strip():
            raise SandboxError(f"no gold diff for {path}: {gold.output[-300:]}")
        return bug, gold.output if gold.output.endswith("\n") else gold.output + "\n"

    def grade_gold(self, row: TaskInstance) -> TestReport:
        """Grade the row's gold patch here (`/testbed` is at the bug commit), then back to the source's commit."""
        try:
            return grade_in(self.sb, row, row.patch, timeout=self.timeout * 2 + 60)
        finally:
            self.reset()

    def reset(self) -> None:
        r = self.sb.exec(f"git reset -q --hard {self.commit} && git clean -fdq && rm -f /tmp/evolve-patch.diff",
                         timeout=120)
        if r.exit_code != 0:
            raise SandboxError(f"could not reset /testbed to {self.commit[:12]}: {r.output[-300:]}")
