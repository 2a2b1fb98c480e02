"""Where the work of a run executes: `local` threads (the default) or a Ray cluster, behind one interface.

An `Executor` runs module-level functions and hands back `concurrent.futures.Future`s, so the code that
drives a run (episodes, grading, expansions) is the same for both backends. The run store keeps one
writer: work that runs on Ray returns its records to the driver, which stores them as they arrive.

`--executor local`, `--executor ray` (a Ray cluster on this machine, started for the run, every one of its servers
listening on loopback only) or
`--executor ray=ADDRESS` (an existing cluster, e.g. `ray=10.0.0.1:6379`, or `ray=auto`).
"""

from __future__ import annotations

import logging
import os
from abc import ABC, abstractmethod
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Literal, Optional

from pydantic import BaseModel, Field

from evolve.errors import ConfigError

log = logging.getLogger(__name__)


class ExecutorConfig(BaseModel):
    """Which executor runs a command's work, and how."""

    backend: Literal["local", "ray"] = "local"
    """`local`: threads in this process; `ray`: tasks on a Ray cluster."""
    address: Optional[str] = None
    """Ray cluster address (`HOST:PORT`, `ray://HOST:PORT` or `auto`); None starts a cluster on this machine."""
    num_cpus: Optional[int] = Field(default=None, ge=1)
    """CPUs of the cluster started on this machine (None: Ray counts them)."""
    max_retries: int = Field(default=3, ge=0)
    """Times Ray reruns a task whose worker process or node died (an episode is then redone elsewhere)."""


def parse_executor(text: str) -> ExecutorConfig:
    """`local`, `ray` or `ray=ADDRESS` -> ExecutorConfig (a one-line error for anything else)."""
    name, sep, address = text.strip().partition("=")
    if name == "local" and not sep:
        return ExecutorConfig()
    if name == "ray" and (not sep or address.strip()):
        return ExecutorConfig(backend="ray", address=address.strip() or None)
    raise ConfigError(f"--executor must be local, ray or ray=ADDRESS, not {text!r}")


class Executor(ABC):
    """Runs functions somewhere and returns futures of their results."""

    remote: bool = False
    """True when functions run in other processes (arguments and results are pickled; no shared state)."""

    @abstractmethod
    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        """Run `fn(*args, **kwargs)`; `fn` must be a module-level function for remote executors."""

    def cancel(self, future: Future, force: bool = False) -> None:
        """Cancel work that has not started (`force`: also work that has, where the backend can)."""
        future.cancel()

    @abstractmethod
    def close(self) -> None:
        """Release the executor's resources (threads, the Ray connection it made)."""

    def __enter__(self) -> "Executor":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LocalExecutor(Executor):
    """Threads in this process: shared memory, no pickling, the store written from the workers."""

    def __init__(self, workers: int):
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="evolve-work")

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        return self.pool.submit(fn, *args, **kwargs)

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


class RayExecutor(Executor):
    """Ray tasks. A task whose worker dies (killed, OOM, node lost) is rerun by Ray up to `max_retries`
    times; exceptions raised by the function itself are not retried (they are the function's answer)."""

    remote = True

    def __init__(self, cfg: ExecutorConfig):
        try:
            import ray
        except ImportError:
            raise ConfigError("--executor ray needs Ray: pip install 'evolve[ray]'") from None
        self.ray = ray
        self.cfg = cfg
        self._owns_cluster = not ray.is_initialized()
        if self._owns_cluster:
            options: dict[str, Any] = dict(include_dashboard=False, log_to_driver=False,
                                           configure_logging=False)
            if cfg.address is None:
                options.update(num_cpus=cfg.num_cpus, _node_ip_address="127.0.0.1")
            try:
                with _loopback_only(ray, cfg.address is None):
                    ray.init(address=cfg.address, **options)
            except Exception as e:  # noqa: BLE001 - any failure to reach or start a cluster is the user's to fix
                first = (str(e).strip().splitlines() or [type(e).__name__])[0]
                raise ConfigError(f"could not {'reach the Ray cluster at ' + cfg.address if cfg.address else 'start a local Ray cluster'}: {first}") from None
        self._remote: dict[Callable[..., Any], Any] = {}
        self._refs: dict[int, Any] = {}

    def nodes(self) -> int:
        """Alive nodes in the cluster."""
        return sum(1 for n in self.ray.nodes() if n.get("Alive"))

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        remote = self._remote.get(fn)
        if remote is None:
            remote = self._remote[fn] = self.ray.remote(max_retries=self.cfg.max_retries,
                                                        retry_exceptions=False)(fn)
        ref = remote.remote(*args, **kwargs)
        fut = ref.future()
        self._refs[id(fut)] = ref
        fut.add_done_callback(lambda f: self._refs.pop(id(f), None))
        return fut

    def cancel(self, future: Future, force: bool = False) -> None:
        ref = self._refs.get(id(future))
        if ref is not None:
            try:
                self.ray.cancel(ref, force=force)
            except Exception as e:  # noqa: BLE001 - already finished or gone
                log.debug("ray.cancel: %s", e)
        future.cancel()

    def close(self) -> None:
        if self._owns_cluster and self.ray.is_initialized():
            self.ray.shutdown()


class _loopback_only:
    """While a one-machine cluster starts: keep the node address 127.0.0.1. Ray turns a loopback node address into the
    machine's outward one unless it takes itself for a one-machine install (`ENABLE_RAY_CLUSTER` false, as on macOS
    and Windows), and its servers (GCS, raylet, workers, agents) bind to the interfaces of the node address, so
    without this every one of them listens on all interfaces. The environment variable reaches the processes the
    cluster starts; the constant, read at call time, this one (Ray may be imported already)."""

    VAR = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"

    def __init__(self, ray: Any, active: bool):
        self.ray, self.active = ray, active

    def __enter__(self) -> None:
        if not self.active:
            return
        from ray._private import ray_constants  # the flag `services.get_node_ip_address` reads

        self.constants = ray_constants
        self.saved = (os.environ.get(self.VAR), ray_constants.ENABLE_RAY_CLUSTER)
        os.environ[self.VAR] = "0"
        ray_constants.ENABLE_RAY_CLUSTER = False

    def __exit__(self, *exc: object) -> None:
        if not self.active:
            return
        env, flag = self.saved
        if env is None:
            os.environ.pop(self.VAR, None)
        else:
            os.environ[self.VAR] = env
        self.constants.ENABLE_RAY_CLUSTER = flag


def make_executor(cfg: ExecutorConfig, workers: int) -> Executor:
    """The executor `cfg` names, for `workers` concurrent pieces of work."""
    if cfg.backend == "ray":
        return RayExecutor(cfg)
    return LocalExecutor(workers)

