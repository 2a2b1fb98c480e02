"""Stored events said in words: one line per event, as the CLI prints them (time, who, what)."""

from __future__ import annotations

import time
from typing import Any

from rich.text import Text

STYLE = {"infra_error": "bold magenta", "instance_infra_error": "bold magenta", "run_stopped": "yellow",
         "instance_done": "green"}
HIDDEN = {"id", "ts", "kind", "run_id"}


def _short(node: str) -> str:
    return str(node).rsplit(":", 1)[-1]


def event_words(ev: dict[str, Any]) -> tuple[str, str]:
    """(who, what) of one event: the instance (or node) it concerns, and what happened in words."""
    kind = ev.get("kind", "")
    who = str(ev.get("instance_id") or ev.get("node_id") or "")
    if kind == "progress":
        return who, str(ev.get("text", ""))
    if kind == "instance_done":
        return who, "done"
    if kind in ("infra_error", "instance_infra_error"):
        return who, f"infrastructure error: {ev.get('error', '')}"
    if kind == "run_stopped":
        return "", f"run stopped ({ev.get('reason', '')})"
    if kind == "hgm":
        return "hgm", _hgm_words(str(ev.get("what", "")))
    if kind == "agent-r:search":
        return who, f"Agent-R iteration {ev.get('iteration')}: searching"
    if kind == "se-agent:operator":
        return who, f"SE-Agent iteration {ev.get('iteration')}: {ev.get('operator', 'operator')}"
    if kind == "se-agent:attempt":
        return who, "SE-Agent attempt " + " ".join(f"{k} {v}" for k, v in ev.items() if k not in HIDDEN | {"instance_id"})
    if kind == "se-agent:iteration":
        return "", f"SE-Agent iteration {ev.get('iteration')} done"
    if kind in ("ray_task", "ray_episode", "agent-r:remote_branch"):
        return who, f"{kind.replace('_', ' ')} " + " ".join(
            f"{k}={v}" for k, v in ev.items() if k not in HIDDEN | {"instance_id", "node_id"})
    rest = " ".join(f"{k}={v}" for k, v in ev.items() if k not in HIDDEN | {"instance_id"})
    return who, f"{kind}: {rest}" if rest else kind


def _hgm_words(what: str) -> str:
    """`evaluate n3 on task-1: pass` / `expand n1 -> n4: accepted` as sentences."""
    head, _, result = what.partition(": ")
    parts = head.split()
    if parts[:1] == ["evaluate"] and len(parts) >= 4:
        return f"evaluated node {parts[1]} on {parts[3]}: {result}"
    if parts[:1] == ["expand"] and len(parts) >= 4:
        return f"node {parts[1]} expanded into {parts[3]}: {result}"
    return what


def event_line(ev: dict[str, Any], who_width: int = 24) -> Text:
    """`HH:MM:SS who  what`, the who column padded so the lines align; a longer name is cut in its middle (ids
    differ at their ends: `astropy__astropy-12907`), never silently."""
    who, what = event_words(ev)
    line = Text(time.strftime("%H:%M:%S ", time.localtime(ev.get("ts") or 0)), style="dim")
    if len(who) > who_width:
        head = (who_width - 1) // 2
        who = who[:head] + "…" + who[len(who) - (who_width - 1 - head):]
    line.append(who.ljust(who_width) + " ", style="bold")
    style = STYLE.get(ev.get("kind", ""), "")
    if ev.get("kind") == "progress" and ("error" in what or "retry" in what):
        style = "magenta"
    line.append(what, style=style)
    return line


def event_matches(ev: dict[str, Any], needle: str) -> bool:
    if not needle:
        return True
    who, what = event_words(ev)
    return needle.lower() in f"{ev.get('kind', '')} {who} {what}".lower()


def for_runs(ev: dict[str, Any], run_ids: set[str] | None) -> bool:
    """The event concerns one of `run_ids` (events stored without a run id belong to every run of the store)."""
    return run_ids is None or not ev.get("run_id") or ev["run_id"] in run_ids
