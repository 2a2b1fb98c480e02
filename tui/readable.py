"""Stored records (documents, node info) as text a person reads: nested keys indented, long texts as blocks, chat
messages as `[role]` and their content, times as dates and durations, never JSON with epoch numbers."""

from __future__ import annotations

import time
from typing import Any, Iterator

from rich.text import Text

from tui.text import clean, clip, duration

TIME_KEYS = ("_at", "ts", "since", "created", "time")
SPAN_KEYS = ("latency", "seconds", "duration", "elapsed")
LONG = 100
"""A string longer than this (or with a newline) is shown as an indented block under its key."""


def when(value: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(value))


def scalar(key: str, value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return {True: "yes", False: "no", None: "-"}[value]
    if isinstance(value, (int, float)):
        k = key.lower()
        if value > 1e9 and k.endswith(TIME_KEYS):
            return when(value)
        if any(s in k for s in SPAN_KEYS):
            return duration(float(value))
        return f"{value:.4g}" if isinstance(value, float) else str(value)
    return clean(str(value))


def is_message(v: Any) -> bool:
    return isinstance(v, dict) and "role" in v and "content" in v


def lines(obj: Any, key: str = "", depth: int = 0, limit: int = 4000) -> Iterator[tuple[int, str, str]]:
    """(depth, text, style) lines of `obj`."""
    pad = depth
    if is_message(obj):
        yield pad, f"[{obj['role']}]" + (f" {obj['name']}" if obj.get("name") else ""), "bold cyan"
        for line in clip(clean(str(obj["content"])), limit).splitlines() or [""]:
            yield pad + 1, line, ""
        for call in obj.get("tool_calls") or []:
            yield pad + 1, f"→ {call.get('name')}({call.get('arguments')})", "yellow"
        return
    if isinstance(obj, dict):
        for k, v in obj.items():
            if isinstance(v, (dict, list)) and v:
                n = f" ({len(v)})" if isinstance(v, list) else ""
                yield pad, f"{k}:{n}", "bold"
                yield from lines(v, str(k), depth + 1, limit)
            elif isinstance(v, str) and (len(v) > LONG or "\n" in v):
                yield pad, f"{k}:", "bold"
                for line in clip(clean(v), limit).splitlines():
                    yield pad + 1, line, ""
            else:
                yield pad, f"{k}: {scalar(str(k), v)}", ""
        return
    if isinstance(obj, list):
        shown = obj[:200]
        for item in shown:
            if isinstance(item, (dict, list)) and not is_message(item):
                yield pad, "-", "dim"
                yield from lines(item, key, depth + 1, limit)
            elif is_message(item):
                yield from lines(item, key, depth, limit)
            else:
                yield pad, f"- {scalar(key, item)}", ""
        if len(obj) > len(shown):
            yield pad, f"… {len(obj) - len(shown)} more", "dim"
        return
    yield pad, scalar(key, obj), ""


def readable(obj: Any, limit: int = 4000) -> Text:
    """`obj` (a document, a node's info) as indented text; each long text cut at `limit` characters."""
    out = Text()
    for depth, line, style in lines(obj, limit=limit):
        out.append("  " * depth + line + "\n", style=style)
    return out


def trajectory_ids(obj: Any) -> list[str]:
    """Every trajectory id a record names (keys ending in `trajectory_id` or `_ids` of trajectories), in order."""
    found: list[str] = []

    def walk(o: Any, key: str = "") -> None:
        if isinstance(o, dict):
            for k, v in o.items():
                walk(v, str(k))
        elif isinstance(o, list):
            for v in o:
                walk(v, key)
        elif isinstance(o, str) and o and (key.endswith("trajectory_id") or key.endswith(("_ids", "sources"))
                                           or key in ("low", "high", "selected", "parent_id")):
            if o not in found:
                found.append(o)

    walk(obj)
    return found


def _short(node: Any) -> str:
    return str(node).rsplit(":", 1)[-1]


def in_words(kind: str, doc: Any) -> str | None:
    """One sentence for a document whose kind says what happened (HGM's scheduler decisions), else None."""
    if kind != "hgm:decision" or not isinstance(doc, dict):
        return None
    what, seq = doc.get("kind"), doc.get("seq")
    if what == "expand":
        said = f"decision {seq}: expand node {_short(doc.get('node'))} into a new child {_short(doc.get('child'))}"
        if doc.get("expansion"):
            said += f" ({doc['expansion']})"
    elif what == "evaluate":
        said = f"decision {seq}: evaluate node {_short(doc.get('node'))} on task {doc.get('task')}"
    else:
        said = f"decision {seq}: {what}"
    if doc.get("reason"):
        said += f", because {doc['reason']}"
    return said + (" (it counts against the budget)" if doc.get("charged") else "")
