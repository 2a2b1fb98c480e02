"""Opening a run directory, one way for every command that writes a run (`evolve run`, `se-agent`, `agent-r`,
`hgm`, `loop`):

    out = run_dir(out, f"hgm-{suite}")        # --out or runs/<default>, checked before anything loads
    with open_run(out, "evolve hgm bundled"):  # created, checked, locked while the command works
        with RunStore(out) as store:
            check_resume(store, run_id, "hgm", config, FIXED)  # a resume keeps the run's kind and settings
            ...

and the instance ids a command line names (`parse_ids`).
"""

from __future__ import annotations

from pathlib import Path
from contextlib import contextmanager
from typing import Any, Iterable, Iterator

from evolve.errors import ConfigError
from evolve.run.run_lock import RunLock
from evolve.store import RunStore, check_run_dir


def parse_ids(text: str | None) -> list[str] | None:
    """`a, b,a` -> `["a", "b"]` (each id once, in the order given); None when `text` names none."""
    ids = list(dict.fromkeys(i.strip() for i in (text or "").split(",") if i.strip()))
    return ids or None


def run_dir(out: str | Path | None, default: str) -> Path:
    """The run directory: `out`, or `runs/<default>`. Checked at once without creating anything, so an unusable
    --out fails before a suite or a model loads (`StoreError`)."""
    path = Path(out) if out else Path("runs") / default
    check_run_dir(path, create=False)
    return path


@contextmanager
def open_run(out: Path, what: str) -> Iterator[Path]:
    """Create `out` (or find it) writable and hold its lock while the block runs: one process writes a run
    directory (`RunLocked` names the other). `what` is the command the lock file names to whoever is kept out."""
    check_run_dir(out)
    with RunLock(out, what):
        yield out


_ABSENT = object()


def _setting(config: Any, key: str) -> Any:
    """`config[key]`, with `a.b` reading `config["a"]["b"]`; `_ABSENT` where the config has no such setting."""
    for part in key.split("."):
        config = config.get(part, _ABSENT) if isinstance(config, dict) else _ABSENT
    return config


def check_resume(store: RunStore, run_id: str, kind: str, config: dict[str, Any], fixed: Iterable[str],
                 defaults: dict[str, Any] | None = None) -> None:
    """A run directory resumes only as what it was: `ConfigError` when it holds another kind of run (`evolve
    KIND`), or when one of the `fixed` settings (`a.b` for a nested one) differs from the stored config (a change
    would mix two experiments in one store; what may grow, such as a budget or more iterations, is not fixed).
    A setting the stored config lacks (a store written before the setting existed) ran with its value in
    `defaults`; without one there, it is not compared."""
    old = next((r for r in store.runs() if r["id"] == run_id), None)
    if old is None:
        return
    if old["kind"] != kind:
        raise ConfigError(f"{store.dir} holds an `evolve {old['kind']}` run, not an `evolve {kind}` run; give "
                          "another --out")
    for key in fixed:
        was, now = _setting(old["config"], key), _setting(config, key)
        if was is _ABSENT and defaults is not None:
            was = _setting(defaults, key)
        if was is not _ABSENT and was != now:
            values = f" ({was!r}, not {now!r})" if len(repr(was)) + len(repr(now)) <= 80 else ""
            raise ConfigError(f"{store.dir} was run with another `{key}` setting{values}: resume with the same "
                              "settings, or give another --out")
