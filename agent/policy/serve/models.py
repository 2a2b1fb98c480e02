"""The models a server answers for, by name: its base policy and stored versions, loaded on first use.

`Models` maps a request's `model` to an engine. The base policy is loaded before the server starts and
stays. Other names go through a `resolver` (the CLI's: `version:ID` and `version:latest` -> the version's
id and how to load it); they load on first use, and idle ones are closed, least recently used first, when
loading another would go over `max_bytes` (estimated from the weight files' sizes). LoRA versions of an
`hf:` base share one copy of the base weights: each is a named adapter on it (`hf_backend.SharedModel`),
costing only its adapter's size.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.policy import load_policy
from agent.policy.base import Policy, PolicyError
from agent.policy.embedded import cache_root
from agent.policy.serve.engine import Engine
from agent.policy.serve.schema import HTTPError

log = logging.getLogger(__name__)


@dataclass
class ModelSource:
    """How to load a served model."""

    name: str
    """Its name in requests and responses (e.g. `version:3f2a…`)."""
    spec: str
    """The `load_policy` spec."""
    options: dict[str, Any] = field(default_factory=dict)
    """`load_policy` options (e.g. `adapter=`)."""
    base: str | None = None
    """For a LoRA adapter on an `hf:` model: the base spec whose weights it shares."""
    adapter: str | None = None
    """For a LoRA adapter: its directory."""
    created: int = 0
    """Unix time the model was made (shown by /v1/models)."""


Resolver = Callable[[str], "ModelSource | None"]
"""A requested name -> its source (None: not a model this server knows)."""
Lister = Callable[[], "list[ModelSource]"]
"""Every model the resolver knows, for /v1/models."""


def _dir_bytes(path: Path, patterns: tuple[str, ...]) -> int:
    return sum(f.stat().st_size for p in patterns for f in path.glob(p) if f.is_file())


def estimate_bytes(source: ModelSource) -> int:
    """Memory a model will take, from its files (weights as stored; adapters alone for LoRA versions)."""
    if source.adapter:
        return _dir_bytes(Path(source.adapter), ("*.safetensors", "*.bin"))
    prefix, _, target = source.spec.partition(":")
    target = target.split("@")[0]
    path = Path(target).expanduser()
    if path.is_file():
        return path.stat().st_size
    if path.is_dir():
        return _dir_bytes(path, ("*.safetensors", "*.bin", "*.gguf"))
    if prefix in ("hf", "llamacpp"):
        try:
            cached = cache_root() / "models" / (f"{target}.gguf" if prefix == "llamacpp" else target)
            if cached.is_file():
                return cached.stat().st_size
            if cached.is_dir():
                return _dir_bytes(cached, ("*.safetensors", "*.bin"))
        except Exception:  # noqa: BLE001 - an estimate only
            pass
    return 0


@dataclass
class _Loaded:
    name: str
    engine: Engine
    policy: Policy | None
    bytes: int
    source: ModelSource | None
    in_use: int = 0
    last_used: float = field(default_factory=time.monotonic)
    shared: Any = None
    """The `SharedModel` it uses (LoRA versions and their base)."""


class Models:
    """Served models by name (see the module docstring)."""

    def __init__(self, base_name: str, base_policy: Policy, make_engine: Callable[..., Engine], *,
                 resolver: Resolver | None = None, lister: Lister | None = None, max_bytes: int | None = None,
                 load: Callable[..., Policy] | None = None) -> None:
        self.make_engine, self.resolver, self.lister, self.max_bytes = make_engine, resolver, lister, max_bytes
        self.load = load or load_policy
        self.base_name = base_name
        self._lock = threading.Lock()
        self._loading: dict[str, threading.Lock] = {}
        self.loaded: dict[str, _Loaded] = {}
        self.bases: dict[str, Any] = {}
        """`hf:` base spec -> its SharedModel, for LoRA versions."""
        engine, shared = make_engine(base_policy, base_name)
        source = ModelSource(base_name, base_policy.spec)
        self.loaded[base_name] = _Loaded(base_name, engine, base_policy, estimate_bytes(source), None, shared=shared)
        if shared is not None and not getattr(getattr(base_policy, "config", None), "adapter", None):
            self.bases[base_policy.spec] = shared  # LoRA versions of this base share its weights
        self.aliases: dict[str, str] = {}

    # ---- lookups ------------------------------------------------------------------------------

    def acquire(self, name: str | None) -> tuple[str, Engine]:
        """(the model's canonical name, its engine), loading it on first use; release() when done."""
        if name is None or name == self.base_name:
            canonical = self.base_name
        else:
            canonical = self.aliases.get(name, name)
        with self._lock:
            entry = self.loaded.get(canonical)
            if entry is not None:
                entry.in_use += 1
                entry.last_used = time.monotonic()
                return canonical, entry.engine
        source = self._resolve(name or "")
        with self._lock:
            gate = self._loading.setdefault(source.name, threading.Lock())
        with gate:  # one load per name; others wait for it
            with self._lock:
                entry = self.loaded.get(source.name)
                if entry is None:
                    self._make_room(estimate_bytes(source))
            if entry is None:
                entry = self._load(source)
            with self._lock:
                self.loaded[source.name] = entry
                entry.in_use += 1
                entry.last_used = time.monotonic()
        return source.name, entry.engine

    def release(self, engine: Engine) -> None:
        with self._lock:
            for entry in self.loaded.values():
                if entry.engine is engine:
                    entry.in_use -= 1
                    entry.last_used = time.monotonic()

    def _resolve(self, name: str) -> ModelSource:
        source = None
        if self.resolver is not None:
            try:
                source = self.resolver(name)
            except (PolicyError, ValueError, RuntimeError) as e:
                raise HTTPError(404, f"The model `{name}` does not exist: {e}", code="model_not_found",
                                param="model") from None
        if source is None:
            raise HTTPError(404, f"The model `{name}` does not exist (this server serves `{self.base_name}`"
                                 + (" and stored versions, see /v1/models" if self.resolver else "") + ").",
                            code="model_not_found", param="model")
        if source.name != name:
            self.aliases[name] = source.name  # e.g. version:latest -> version:ID (until restart)
        return source

    def cards(self) -> list[dict[str, Any]]:
        out = [self.card(self.base_name)]
        if self.lister is not None:
            try:
                sources = self.lister()
            except Exception as e:  # noqa: BLE001 - a broken store must not break /v1/models
                log.warning("cannot list stored versions: %s", e)
                sources = []
            out += [self.card(s.name, s) for s in sources if s.name != self.base_name]
        return out

    def card(self, name: str, source: ModelSource | None = None) -> dict[str, Any]:
        entry = self.loaded.get(name)
        card: dict[str, Any] = {"id": name, "object": "model", "created": source.created if source else 0,
                                "owned_by": "evolve", "loaded": entry is not None}
        if entry is not None:
            card["max_model_len"] = entry.engine.context_length
        if source is not None and source.adapter:
            card["parent"] = source.base
        return card

    # ---- loading and memory -------------------------------------------------------------------

    def used_bytes(self) -> int:
        return sum(e.bytes for e in self.loaded.values())

    def _make_room(self, need: int) -> None:
        """Close idle models, least recently used first, until `need` more bytes fit (under `_lock`)."""
        if self.max_bytes is None:
            return
        while self.used_bytes() + need > self.max_bytes:
            idle = [e for e in self.loaded.values()
                    if e.in_use == 0 and e.name != self.base_name and not self._is_needed_base(e)]
            if not idle:
                raise HTTPError(503, f"loading this model ({need / 1e6:.0f} MB) would go over the server's "
                                     f"model memory cap ({self.max_bytes / 1e6:.0f} MB, {self.used_bytes() / 1e6:.0f} "
                                     "MB in use by models serving requests); retry later or raise "
                                     "--max-model-memory", kind="server_error", code="model_memory_cap")
            victim = min(idle, key=lambda e: e.last_used)
            self._unload(victim)

    def _is_needed_base(self, entry: _Loaded) -> bool:
        return entry.shared is not None and entry.source is None and any(
            e.shared is entry.shared and e is not entry for e in self.loaded.values())

    def _unload(self, entry: _Loaded) -> None:
        log.info("closing model %s (idle; memory cap)", entry.name)
        del self.loaded[entry.name]
        entry.engine.close()
        if entry.source is not None and entry.source.adapter and entry.shared is not None:
            entry.shared.remove_adapter(entry.name)
        elif entry.policy is not None:
            for spec, shared in list(self.bases.items()):
                if shared is entry.shared:
                    del self.bases[spec]
            entry.policy.close()

    def _load(self, source: ModelSource) -> _Loaded:
        log.info("loading model %s (%s)", source.name, source.spec)
        try:
            if source.adapter and source.base and source.base.startswith("hf:"):
                shared = self._base(source.base)
                shared.add_adapter(source.name, source.adapter)
                engine, _ = self.make_engine(shared.policy, source.name, shared=shared, adapter=source.name)
                return _Loaded(source.name, engine, None, estimate_bytes(source), source, shared=shared)
            policy = self.load(source.spec, **source.options)
            engine, shared = self.make_engine(policy, source.name)
            return _Loaded(source.name, engine, policy, estimate_bytes(source), source, shared=shared)
        except PolicyError as e:
            raise HTTPError(500, f"cannot load {source.name}: {e}", kind="server_error") from None

    def _base(self, spec: str) -> Any:
        """The SharedModel of an `hf:` base spec, loading the base on first need (its weights count)."""
        if spec in self.bases:
            return self.bases[spec]
        source = ModelSource(f"{spec} (base of LoRA versions)", spec)
        with self._lock:
            self._make_room(estimate_bytes(source))
        policy = self.load(spec)
        engine, shared = self.make_engine(policy, source.name)
        with self._lock:
            self.loaded[source.name] = _Loaded(source.name, engine, policy, estimate_bytes(source), None, shared=shared)
        self.bases[spec] = shared
        return shared

    def close(self) -> None:
        """Close every engine, and the policies this registry loaded (the base policy stays its owner's)."""
        for entry in list(self.loaded.values()):
            entry.engine.close()
            if entry.name != self.base_name and entry.policy is not None:
                entry.policy.close()
