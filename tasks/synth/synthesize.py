"""`synthesize`: sources in, validated SWE-bench rows out (appended to the suite file as they pass).

Per source, in its own sandbox (`--workers` sources at a time): the suite runs twice on the original (a
source that is not green is refused with the reason) while recording what each test file runs (`coverage`); bugs
are tried in batches (`plan.order`: changes to lines the tests ran, families taking turns), each batch in one call
of the container runner, each bug with the test files that ran its function or class (the task's tests, as
SWE-bench runs an instance's test files); a bug whose first run shows a FAIL_TO_PASS runs a second time; a bug
that keeps at least one is committed, its issue written, its gold patch graded through `tasks.grading` (must
resolve) and the empty patch too (must not). Everything is journaled (`journal`), so a killed synthesis resumes.
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from pydantic import BaseModel, Field

from sandbox import SandboxConfig, SandboxError
from tasks.grading import grade
from tasks.synth import issue, outcomes, plan
from tasks.synth.coverage import Coverage
from tasks.synth.env_image import ensure_source_image
from tasks.synth.families import FAMILIES, Mutation
from tasks.synth.journal import Journal
from tasks.synth.llm_bugs import propose
from tasks.synth.rows import make_row
from tasks.synth.session import SourceSession
from tasks.synth.sources import Source

log = logging.getLogger(__name__)
RUNNER_ARGS = ["--tb=no"]
"""Added to the validation runs only (not to the rows' test command): no tracebacks (the container runner still
reports the first failure in pytest's short style, for the issue text) make a bug that fails a hundred tests
cost a fraction of the time to report, and change no test's status."""
Complete = Callable[[str], str]
OnEvent = Callable[[str, str], None]


class SynthConfig(BaseModel):
    """Settings of one synthesis."""

    out: Path
    """The suite file (JSONL rows); `OUT.attempts` journals every bug tried. The same `out` resumes."""
    n: int = Field(default=100, ge=1)
    """Validated tasks wanted in all (spread evenly over the sources: each stops at its share)."""
    methods: list[str] = Field(default_factory=lambda: ["procedural"])
    """`procedural` (the bug families) and/or `llm` (a policy rewrites functions; needs `complete`)."""
    families: list[str] = Field(default_factory=lambda: list(FAMILIES))
    """Procedural families to use."""
    workers: int = Field(default=2, ge=1)
    """Sources validated at once (one sandbox each)."""
    batch: int = Field(default=12, ge=1)
    """Bugs per call of the container runner."""
    holdout: float = Field(default=0.2, ge=0, lt=1)
    """Share of the sources whose tasks form the held-out split (`test`); the others are `train`."""
    seed: int = 0
    """Order of the bugs tried."""
    max_attempts_factor: int = Field(default=8, ge=1)
    """A source stops after trying this many times its share of bugs (its yield is too low)."""
    sandbox: SandboxConfig = Field(default_factory=SandboxConfig)
    """Sandboxes of the sources' images (no network, whatever this says)."""


def splits(names: list[str], holdout: float, keep: dict[str, str] | None = None) -> dict[str, str]:
    """`train` or `test` for each source, by source: a source's tasks are all on one side. Deterministic (ranked
    by a hash of the name); at least one held-out source when there are two or more and `holdout` > 0; a
    source that already has rows keeps its split (``keep``)."""
    keep = keep or {}
    ranked = sorted(names, key=lambda n: hashlib.sha1(n.encode()).hexdigest())
    k = 0 if holdout <= 0 or len(names) < 2 else max(1, round(holdout * len(names)))
    out = {n: ("test" if i < k else "train") for i, n in enumerate(ranked)}
    out.update({n: s for n, s in keep.items() if n in out and s})
    return out


def _options(source: Source) -> list[str]:
    return [a for a in source.pytest_argv() + RUNNER_ARGS if a not in source.tests]


def run_args(source: Source, files: list[str] | None) -> list[str] | None:
    """pytest's arguments for a bug's first run: the test files that ran the changed code (None: the whole
    suite, the session's default)."""
    return _options(source) + files if files else None


def rerun_args(source: Source, fail_to_pass: list[str], base: outcomes.Baseline,
               files: list[str] | None = None) -> list[str] | None:
    """pytest's arguments for a bug's second run: only its FAIL_TO_PASS tests (the run is there to see them fail
    again; its PASS_TO_PASS pass in both runs of the original and again when the gold patch is graded), by node
    id, or by file where an id cannot be given back to pytest (swebench's parser cuts ids at a space). The
    bug's test files (``files``; None: the whole suite) when they are most of them (``base`` is the baseline of
    those files)."""
    if len(fail_to_pass) * 2 > len(base.passing):
        return run_args(source, files)
    clean = all(t.count("[") == t.count("]") and "::" in t for t in fail_to_pass)
    targets = fail_to_pass if clean else sorted({t.split("::")[0] for t in fail_to_pass})
    return _options(source) + targets


@dataclass
class SourceReport:
    source: str
    split: str = ""
    refused: str | None = None
    image: str = ""
    tests: int = 0
    candidates: int = 0
    tried: int = 0
    kept: int = 0
    seconds: float = 0.0
    error: str | None = None


@dataclass
class Synthesis:
    cfg: SynthConfig
    sources: list[Source]
    complete: Complete | None = None
    """The policy for `--methods llm` and for writing issues (`--policy`), as prompt -> text."""
    on_event: OnEvent = lambda source, what: None
    journal: Journal = field(init=False)
    stop: threading.Event = field(default_factory=threading.Event)
    phases: dict[str, float] = field(default_factory=dict)
    """Seconds spent per phase, summed over workers (the bench prints them)."""

    def __post_init__(self) -> None:
        self.journal = Journal(self.cfg.out)
        names = [s.name for s in self.sources]
        self.split = splits(names, self.cfg.holdout, {n: self.journal.split_of(n) or "" for n in names})
        self.share = math.ceil(self.cfg.n / max(1, len(self.sources)))
        self._phase_lock = threading.Lock()

    def _timed(self, phase: str, start: float) -> None:
        with self._phase_lock:
            self.phases[phase] = self.phases.get(phase, 0.0) + time.time() - start

    def run(self) -> list[SourceReport]:
        with ThreadPoolExecutor(max_workers=self.cfg.workers) as pool:
            return list(pool.map(self._source_safe, self.sources))

    def _source_safe(self, source: Source) -> SourceReport:
        rep = SourceReport(source=source.name, split=self.split[source.name])
        start = time.time()
        try:
            self._source(source, rep)
        except SandboxError as e:
            rep.error = str(e).splitlines()[0][:300]
            self.on_event(source.name, f"error: {rep.error}")
        rep.seconds = round(time.time() - start, 1)
        return rep

    def _enough(self, source: Source) -> bool:
        return self.stop.is_set() or self.journal.rows_of(source.name) >= self.share \
            or self.journal.total() >= self.cfg.n

    def _source(self, source: Source, rep: SourceReport) -> None:
        rep.kept = self.journal.rows_of(source.name)
        if self._enough(source):
            return
        self.on_event(source.name, "building image")
        t = time.time()
        image, commit, files = ensure_source_image(source)
        self._timed("image", t)
        rep.image = image
        cfg = self.cfg.sandbox.model_copy(update={"network": False})
        with SourceSession(image, commit, source.pytest_argv() + RUNNER_ARGS, cfg) as sess:
            self.on_event(source.name, "baseline")
            t = time.time()
            base, coverage = sess.baseline(files)
            self._timed("baseline", t)
            rep.tests = len(base.passing)
            rep.refused = base.refusal()
            if rep.refused:
                self.journal.add_attempt({"kind": "source", "source": source.name, "refused": rep.refused})
                self.on_event(source.name, f"refused: {rep.refused}")
                return
            contents = {f: sess.read(f) for f in files}
            todo = self._bugs(source, contents, coverage)
            rep.candidates = len(todo)
            budget = self.share * self.cfg.max_attempts_factor
            i = 0
            while i < len(todo) and not self._enough(source) and rep.tried < budget:
                batch = todo[i:i + self.cfg.batch]
                i += len(batch)
                self._batch(source, sess, base, coverage, contents, commit, image, batch, rep)
                self.on_event(source.name, f"{self.journal.rows_of(source.name)} kept of {rep.tried} tried")
        rep.kept = self.journal.rows_of(source.name)

    def _bugs(self, source: Source, contents: dict[str, bytes], coverage: Coverage) -> list[Mutation]:
        out: list[Mutation] = []
        if "procedural" in self.cfg.methods:
            out += plan.order(contents, coverage, self.cfg.families, seed=self.cfg.seed)
        if "llm" in self.cfg.methods and self.complete is not None:
            funcs = list(dict.fromkeys((m.entity.file, m.entity.name) for m in out if m.entity.kind == "function"))
            funcs = funcs[: max(1, self.share)]
            out = list(propose(source.name, contents, funcs, self.complete)) + out
        return [m for m in out if not self.journal.done(source.name, m.key)]

    def _attempt(self, source: Source, m: Mutation, verdict: str, reason: str = "", **more) -> None:
        self.journal.add_attempt({"kind": "bug", "source": source.name, "key": m.key, "family": m.family,
                                  "file": m.entity.file, "function": m.entity.name, "verdict": verdict,
                                  "reason": reason, **more})

    def _batch(self, source, sess: SourceSession, base, coverage: Coverage, contents, commit, image, batch,
               rep) -> None:
        bugs, files, bases = {}, {}, {}
        for m in batch:
            if m.valid(contents[m.entity.file]):
                bugs[m.key] = (m, m.apply(contents[m.entity.file]))
                files[m.key] = coverage.test_files(m.entity)
                bases[m.key] = base.restrict(files[m.key])
            else:
                self._attempt(source, m, "rejected", "the mutated file does not compile")
        rep.tried += len(batch)
        t = time.time()
        first = sess.run([{"id": k, "file": m.entity.file, "content": c.decode(),
                           "args": run_args(source, files[k])} for k, (m, c) in bugs.items()])
        self._timed("first run", t)
        again = []
        for k, (m, c) in bugs.items():
            if k not in first:
                continue  # the runner did not reach it: tried again on resume
            v = outcomes.verdict(bases[k], [first[k]])
            if v.reason:
                self._attempt(source, m, "rejected", v.reason, runs=[first[k]["seconds"]])
            else:
                again.append(k)
        t = time.time()
        second = sess.run([{"id": k, "file": bugs[k][0].entity.file, "content": bugs[k][1].decode(),
                            "args": rerun_args(source, outcomes.verdict(bases[k], [first[k]]).fail_to_pass,
                                               bases[k], files[k])}
                           for k in again])
        self._timed("second run", t)
        for k in again:
            if k not in second:
                continue
            m, content = bugs[k]
            v = outcomes.verdict(bases[k], [first[k], second[k]])
            runs = [first[k]["seconds"], second[k]["seconds"]]
            if v.reason:
                self._attempt(source, m, "rejected", v.reason + " (second run)", runs=runs)
                continue
            self._keep(source, sess, m, content, v, first[k], commit, image, runs, files[k])

    def _keep(self, source, sess: SourceSession, m: Mutation, content: bytes, v: outcomes.Verdict, result: dict,
              commit: str, image: str, runs: list[float], files: list[str] | None) -> None:
        t = time.time()
        bug_commit, gold = sess.commit_bug(m.entity.file, content)
        self._timed("commit", t)
        inp = issue.IssueInput(source=source.name, file=m.entity.file, function=m.entity.name,
                               docstring=m.entity.docstring, failing_tests=v.fail_to_pass, failure=result["failure"])
        statement, how = issue.write(inp, gold, content.decode(errors="replace"), self.complete)
        method = "llm" if m.family == "llm_rewrite" else "procedural"
        row = make_row(source=source, source_image=image, source_commit=commit, key=m.key, bug_commit=bug_commit,
                       gold=gold, fail_to_pass=v.fail_to_pass, pass_to_pass=v.pass_to_pass, statement=statement,
                       method=method, family=m.family, file=m.entity.file, function=m.entity.name, tests=files)
        row.extra["split"] = self.split[source.name]
        row.extra["issue"] = how
        if how == "leaks":
            sess.reset()
            self._attempt(source, m, "rejected", "the issue text gives the fix away")
            return
        t = time.time()
        report = sess.grade_gold(row)
        self._timed("gold grading", t)
        if not report.resolved:
            why = report.error or f"{len(report.fail_to_pass_failure)} FAIL_TO_PASS and " \
                                  f"{len(report.pass_to_pass_failure)} PASS_TO_PASS tests fail with it"
            self._attempt(source, m, "rejected", f"the gold patch does not resolve through grading: {why}")
            return
        if grade(row, "").resolved:
            self._attempt(source, m, "rejected", "the empty patch resolves it")
            return
        self.journal.add_row(row)
        self._attempt(source, m, "valid", f2p=len(v.fail_to_pass), p2p=len(v.pass_to_pass), runs=runs,
                      gold_seconds=round(report.seconds, 2))
