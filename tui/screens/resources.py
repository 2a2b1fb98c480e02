"""Resources (`R`): the machine's CPU, memory and GPUs; each running run's process (CPU, memory, threads, with its
children); the live sandboxes (Docker containers labelled `evolve.run`) with their run, state and age."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import time
from typing import Any

import psutil
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Static

from evolve.store import lock_holder, owner_alive
from tui.fast_table import FastTable
from tui.text import duration
from tui.widgets import fill_table, resort, sort_by_header

REFRESH = 2.0
"""Seconds between readings (a Docker listing costs tens of milliseconds: not every poll)."""
GIB = 1024 ** 3


def nvidia_smi(*query: str) -> list[list[str]]:
    """Rows of `nvidia-smi --query-...` as CSV fields ([] without the tool or a GPU)."""
    if not shutil.which("nvidia-smi"):
        return []
    try:
        got = subprocess.run(["nvidia-smi", *query, "--format=csv,noheader,nounits"], capture_output=True, text=True,
                             timeout=3)
    except (OSError, subprocess.SubprocessError):
        return []
    return [[x.strip() for x in line.split(",")] for line in got.stdout.strip().splitlines() if "," in line]


def gpu_memory_by_pid() -> dict[int, float]:
    """MiB of GPU memory each process uses (the compute processes `nvidia-smi` lists)."""
    out: dict[int, float] = {}
    for row in nvidia_smi("--query-compute-apps=pid,used_memory"):
        try:
            out[int(row[0])] = out.get(int(row[0]), 0.0) + float(row[1])
        except (ValueError, IndexError):
            continue
    return out


def machine() -> dict[str, Any]:
    """CPU use since the last call, load, memory, and the GPUs `nvidia-smi` reports (none without it)."""
    mem = psutil.virtual_memory()
    out = dict(cpu=psutil.cpu_percent(interval=None), cores=psutil.cpu_count() or 1,
               load=os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0),
               mem_used=mem.total - mem.available, mem_total=mem.total, gpus=[])
    for row in nvidia_smi("--query-gpu=name,utilization.gpu,memory.used,memory.total"):
        try:
            out["gpus"].append(dict(name=row[0], util=float(row[1]), used=float(row[2]), total=float(row[3])))
        except (ValueError, IndexError):
            continue
    return out


def containers() -> tuple[list[dict[str, Any]], str | None]:
    """The sandboxes of every run (containers labelled `evolve.run`), or why Docker could not say."""
    try:
        import docker  # the Docker SDK: a client only when the screen asks (it opens a connection)

        client = docker.from_env(timeout=5)
        try:
            found = client.containers.list(all=True, filters={"label": "evolve.run"})
            rows = []
            for c in found:
                try:  # "2026-01-01T12:00:00.123456789Z": the seconds are enough for an age
                    born = dt.datetime.fromisoformat(c.attrs.get("Created", "")[:19]).replace(
                        tzinfo=dt.timezone.utc).timestamp()
                except ValueError:
                    born = None
                rows.append(dict(name=c.name, run=c.labels.get("evolve.run", ""), state=c.status, created=born,
                                 image=(c.attrs.get("Config") or {}).get("Image", "")))
            return rows, None
        finally:
            client.close()
    except Exception as e:  # noqa: BLE001 - no daemon, no permission: said on the screen, never a crash
        return [], f"Docker: {type(e).__name__}: {str(e)[:120]}"


class ResourcesScreen(Screen):
    BINDINGS = [Binding("escape", "app.pop_screen", "Back"), Binding("q", "app.quit", "Quit", show=False)]

    def __init__(self) -> None:
        super().__init__()
        self.procs: dict[int, psutil.Process] = {}
        """Processes measured before: `cpu_percent` is the use since the previous reading of the same object."""
        self.read_at = 0.0
        self.sorted: dict[str, dict] = {}
        """The order a header click chose, per table (kept when the tables are filled again)."""

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(id="machine")
        yield FastTable(id="run-res", cursor_type="row", zebra_stripes=True)
        yield FastTable(id="sandboxes", cursor_type="row", zebra_stripes=True)
        yield Footer(show_command_palette=False)

    def on_mount(self) -> None:
        self.title = "resources"
        psutil.cpu_percent(interval=None)  # the first reading starts the measurement
        self.refresh_now()
        self.set_interval(REFRESH, self.refresh_now)

    def refresh_now(self) -> None:
        if self.is_current:
            self.run_worker(self.read, thread=True, exclusive=True, group="resources")

    def _process(self, pid: int, gpu: dict[int, float]) -> dict[str, Any] | None:
        """CPU (since the last reading), resident memory, threads and GPU memory of `pid` and its children."""
        try:
            root = self.procs.get(pid) or psutil.Process(pid)
            self.procs[pid] = root
            family = [root] + root.children(recursive=True)
            cpu = mem = threads = 0.0
            for p in family:
                known = self.procs.setdefault(p.pid, p)
                try:
                    cpu += known.cpu_percent(interval=None)
                    mem += known.memory_info().rss
                    threads += known.num_threads()
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
            return dict(cpu=cpu, mem=mem, threads=int(threads), procs=len(family),
                        gpu=sum(gpu.get(p.pid, 0.0) for p in family))
        except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError):
            return None

    def read(self) -> None:
        src = self.evolve.source if hasattr(self.app, "source") else None
        runs = []
        gpu = gpu_memory_by_pid()
        for run in (src.runs() if src is not None else []):
            if run.status not in ("running", "dead"):
                continue
            holder = lock_holder(run.store_dir) or {}
            alive = owner_alive(run.store_dir)
            proc = self._process(int(holder["pid"]), gpu) if holder.get("pid") and alive is not False else None
            runs.append((run, holder, proc))
        boxes, why = containers()
        self.app.call_from_thread(self.show, machine(), runs, boxes, why)

    @property
    def evolve(self) -> Any:
        return self.app

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        sort_by_header(event.data_table, event.column_key, self.sorted.setdefault(event.data_table.id, {}))

    def show(self, mach: dict, runs: list, boxes: list[dict], why: str | None) -> None:
        now = time.time()
        text = Text()
        text.append(f"CPU {mach['cpu']:.0f}% of {mach['cores']} cores", style="bold")
        text.append(f" · load {' '.join(f'{x:.1f}' for x in mach['load'])}")
        text.append(f" · memory {mach['mem_used'] / GIB:.1f}/{mach['mem_total'] / GIB:.1f} GiB "
                    f"({100 * mach['mem_used'] / max(mach['mem_total'], 1):.0f}%)")
        if mach["gpus"]:
            for k, g in enumerate(mach["gpus"]):
                text.append(f"\nGPU {k} {g['name']}: {g['util']:.0f}% · {g['used'] / 1024:.1f}/{g['total'] / 1024:.1f} GiB")
        else:
            text.append(" · no GPU")
        if why:
            text.append(f"\n{why}", style="magenta")
        self.query_one("#machine", Static).update(text)
        live = {}
        for b in boxes:
            live.setdefault(b["run"], [0, 0])
            live[b["run"]][0 if b["state"] == "running" else 1] += 1
        rows, keys = [], []
        for run, holder, proc in runs:
            n = live.get(run.run_id, [0, 0])
            rows.append((run.run_id, Text(run.status, style="bold red" if run.status == "dead" else "green"),
                         holder.get("pid", "-"), f"{proc['cpu']:.0f}%" if proc else "-",
                         f"{proc['mem'] / GIB:.2f} GiB" if proc else "-", proc["threads"] if proc else "-",
                         proc["procs"] if proc else "-", f"{proc['gpu'] / 1024:.1f} GiB" if proc and proc["gpu"] else "-",
                         f"{n[0]} live" + (f" +{n[1]}" if n[1] else ""),
                         holder.get("what", "")))
            keys.append(run.key)
        table = self.query_one("#run-res", DataTable)
        fill_table(table, ("run", "status", "pid", "cpu", "memory", "threads", "procs", "gpu", "sandboxes", "command"),
                   rows, keys, flex="command")
        resort(table, self.sorted.get("run-res"))
        table.border_title = f"running runs: {len(rows)}"
        boxes = sorted(boxes, key=lambda b: (b["run"], -(b["created"] or 0)))
        brows = [(b["name"], b["run"], Text(b["state"], style="green" if b["state"] == "running" else "dim"),
                  duration(now - b["created"]) if b["created"] else "-", b["image"]) for b in boxes]
        sb = self.query_one("#sandboxes", DataTable)
        fill_table(sb, ("container", "run", "state", "age", "image"), brows, [b["name"] for b in boxes], flex="image")
        resort(sb, self.sorted.get("sandboxes"))
        sb.border_title = f"sandboxes: {sum(b['state'] == 'running' for b in boxes)} running of {len(boxes)}"
        self.read_at = time.time()
