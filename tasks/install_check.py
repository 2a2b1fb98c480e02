"""Did the eval script's reinstall of the repository work?

The official eval scripts reinstall the repository before the tests (`python -m pip install -e .`, ...).
Graded without network, as Evolve grades, that step can fail (pip cannot fetch build requirements) while
the script goes on and runs the tests against whatever the image had installed: a verdict that may differ
from the harness's. `instrument` makes the script print each install command's exit status, outside the
test output markers, and `install_exit_codes` reads them back from the log.
"""

from __future__ import annotations

import re

from swebench.harness.constants import START_TEST_OUTPUT

MARK = ">>>>> Evolve Install Exit Code"
VAR = "EVOLVE_INSTALL_EXIT_CODE"
INSTALL = re.compile(r"(?:^|[\s;&|(])(?:(?:\S*python[\d.]*\s+-m\s+)?pip[\d.]*\s+install\b|\S*setup\.py\s+"
                     r"(?:develop|install|build_ext|build)\b|conda\s+install\b)")
HEREDOC = re.compile(r"<<-?\s*(['\"]?)([A-Za-z_][A-Za-z0-9_]*)\1")
CONTINUES = ("\\", "&&", "||", "|")


def instrument(script: str) -> str:
    """``script`` with `VAR=$?` and an echo of it after every install command before the test output."""
    out: list[str] = []
    lines = script.split("\n")
    heredoc: str | None = None
    pending = False  # an install command is being continued on the next line
    for i, line in enumerate(lines):
        out.append(line)
        if heredoc is not None:
            if line.strip() == heredoc:
                heredoc = None
            continue
        if START_TEST_OUTPUT in line:
            out.extend(lines[i + 1:])
            break
        m = HEREDOC.search(line)
        if m:
            heredoc = m.group(2)
            continue
        if line.lstrip().startswith("#"):
            continue
        pending = pending or bool(INSTALL.search(line))
        if pending and not line.rstrip().endswith(CONTINUES):
            out.extend([f"{VAR}=$?", f'echo "{MARK}: ${VAR}"'])
            pending = False
    return "\n".join(out)


def install_exit_codes(log: str) -> list[int]:
    """Exit statuses the instrumented install commands printed (the `set -x` trace lines are not counted)."""
    return [int(m) for m in re.findall(rf"^{re.escape(MARK)}: (-?\d+)\s*$", log, flags=re.M)]
