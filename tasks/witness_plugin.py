# The grading witness: a pytest plugin that `tasks.witness` installs, under a random module name, in the
# grading sandbox's site-packages before the tests run, and loads with `-p` (PYTEST_ADDOPTS): pytest imports it
# before any conftest or code under test. It records, in a file outside /testbed, what pytest itself cannot be
# trusted to say once the code under test has run in its process:
#   - each test phase's raw outcome (did the test function raise?), seen by hook wrappers around setup, call
#     and teardown, independent of how reports are built, coloured and printed;
#   - whether pytest's, pluggy's and unittest's verdict machinery (functions, methods, modules) was replaced
#     after start-up, and by code from which file;
#   - whether the session finished with the witness still registered.
# It also turns plugin autoloading off and loads only the pytest11 entry points the image had before the patch
# (a distribution the patch or its reinstall adds is blocked and recorded).
# Everything here is best effort and never raises into pytest, except a failure to load an allowed plugin,
# which autoload would have raised too. Python 3.5+ and pytest 2.8+: no f-strings, no annotations.
# The three constants below are filled in by tasks/witness.py.
import json as _json
import os as _os
import sys as _sys

OUT_DIR = "@@OUT_DIR@@"
ALLOWED = "@@ALLOWED@@"  # JSON: null, or [[name, "module:attr"], ...]
MY_NAME = "@@MY_NAME@@"

_write, _open, _getpid, _dumps, _join = _os.write, _os.open, _os.getpid, _json.dumps, _os.path.join
_state = {"fd": None, "config": None, "snapshot": None, "loaded_allowed": False, "finished": False, "bad": set()}


def _emit(kind, **data):
    try:
        if _state["fd"] is None:
            _state["fd"] = _open(_join(OUT_DIR, "%d.jsonl" % _getpid()), _os.O_WRONLY | _os.O_CREAT | _os.O_APPEND,
                                 0o666)
        data["kind"] = kind
        _write(_state["fd"], (_dumps(data) + "\n").encode("utf-8"))
    except Exception:
        pass


try:
    _allowed = _json.loads(ALLOWED)
except Exception:
    _allowed = None

# Hide the `-p` option from the tested code's environment (and from nested pytest runs it starts).
_rest = _os.environ.get("PYTEST_ADDOPTS", "").replace("-p " + MY_NAME, "").strip()
if _rest:
    _os.environ["PYTEST_ADDOPTS"] = _rest
else:
    _os.environ.pop("PYTEST_ADDOPTS", None)
# Autoload off until pytest has passed the point where it autoloads (pytest >= 3.9 reads this variable right
# after loading `-p` plugins); restored before any conftest loads, so nested pytest runs behave as usual.
_autoload_before = _os.environ.get("PYTEST_DISABLE_PLUGIN_AUTOLOAD")
if _allowed is not None:
    _os.environ["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"

import pytest  # noqa: E402  (already imported by pytest itself)

_emit("loaded", pytest=getattr(pytest, "__version__", "?"), allowed=_allowed is not None)


def _wrapper(fn):
    hookimpl = getattr(pytest, "hookimpl", None)
    if hookimpl is not None:
        return hookimpl(hookwrapper=True, tryfirst=True)(fn)
    return pytest.mark.hookwrapper(pytest.mark.tryfirst(fn))


def _first(fn):
    hookimpl = getattr(pytest, "hookimpl", None)
    if hookimpl is not None:
        return hookimpl(tryfirst=True)(fn)
    return pytest.mark.tryfirst(fn)


# --- entry points --------------------------------------------------------------------------------------

def _entry_points():
    """[(name, value)] of the pytest11 entry points installed now (metadata only: nothing is imported)."""
    found = []
    try:
        try:
            from importlib import metadata as md
        except ImportError:
            import importlib_metadata as md
        eps = md.entry_points()
        group = eps.select(group="pytest11") if hasattr(eps, "select") else eps.get("pytest11", [])
        for ep in group:
            found.append((ep.name, ep.value))
        return found
    except Exception:
        pass
    try:
        import pkg_resources
        for ep in pkg_resources.iter_entry_points("pytest11"):
            value = ep.module_name + (":" + ".".join(ep.attrs) if ep.attrs else "")
            found.append((ep.name, value))
    except Exception:
        pass
    return found


def _load(value):
    module, _, attr = value.partition(":")
    obj = __import__(module.strip(), fromlist=["_"])
    for part in filter(None, attr.strip().split(".")):
        obj = getattr(obj, part)
    return obj


def pytest_plugin_registered(plugin, manager):
    # historic: called for us at our own registration, before pytest autoloads entry points
    if plugin is not _sys.modules.get(__name__) or _allowed is None or _state.get("blocked_new") is not None:
        return
    allowed = set(name for name, _ in _allowed)
    new = sorted(set(name for name, _ in _entry_points()) - allowed)
    _state["blocked_new"] = new
    for name in new:  # pytest < 3.9 autoloads whatever the variable says: block what the image did not have
        try:
            manager.set_blocked(name)
        except Exception:
            pass
    if new:
        _emit("foreign_entry_points", names=new)


@_wrapper
def pytest_load_initial_conftests(early_config, parser, args):
    if _allowed is not None and not _state["loaded_allowed"]:
        _state["loaded_allowed"] = True
        if _autoload_before is None:
            _os.environ.pop("PYTEST_DISABLE_PLUGIN_AUTOLOAD", None)
        else:
            _os.environ["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = _autoload_before
        manager = early_config.pluginmanager
        for name, value in _allowed:
            if manager.get_plugin(name) is not None or manager.is_blocked(name):
                continue
            plugin = _load(value)  # as autoload would: a plugin that fails to import fails the run
            if manager.is_registered(plugin):
                continue  # already loaded by its module name (`-p module`)
            manager.register(plugin, name)
    _take_snapshot(early_config.pluginmanager)
    yield


# --- integrity of the verdict machinery ----------------------------------------------------------------

WATCHED = ("pytest", "_pytest.reports", "_pytest.runner", "_pytest.terminal", "_pytest.python",
           "_pytest.unittest", "_pytest.skipping", "_pytest.main", "_pytest.outcomes", "_pytest.nodes",
           "_pytest.fixtures", "_pytest.doctest", "_pytest.junitxml", "pluggy", "pluggy._callers",
           "pluggy._hooks", "pluggy._manager", "pluggy._result", "pluggy.callers", "pluggy.hooks",
           "pluggy.manager", "unittest", "unittest.case", "unittest.result", "unittest.runner", "unittest.suite")
_FUNCS = (type(_load), type(len), staticmethod, classmethod, property)


def _entries():
    """[(key, live namespace, name, object, its function or None, that function's code)] of every function, class
    and class member in the watched modules (the namespaces are the modules' and classes' own dicts, read again at
    each check)."""
    out = []
    for modname in WATCHED:
        mod = _sys.modules.get(modname)
        if mod is None:
            continue
        space = vars(mod)
        for name, obj in list(space.items()):
            if isinstance(obj, type) and getattr(obj, "__module__", "") == modname:
                out.append((modname + "." + name, space, name, obj, None, None))
                members = vars(obj)
                for member, value in list(members.items()):
                    if isinstance(value, _FUNCS):
                        fn = getattr(value, "__func__", None) or getattr(value, "fget", None) or value
                        code = getattr(fn, "__code__", None)
                        out.append((modname + "." + name + "." + member, members, member, value,
                                    fn if code is not None else None, code))
            elif isinstance(obj, type(_load)) and getattr(obj, "__module__", "") == modname:
                out.append((modname + "." + name, space, name, obj, obj, obj.__code__))
    return out


def _impls(manager):
    """{(hook name, file of the implementing function)} of every hook implementation registered now."""
    out = set()
    if manager is None:
        return out
    try:
        for name, caller in list(vars(manager.hook).items()):
            get = getattr(caller, "get_hookimpls", None)
            impls = get() if get is not None else (list(getattr(caller, "_nonwrappers", [])) +
                                                   list(getattr(caller, "_wrappers", [])))
            for impl in impls:
                code = getattr(getattr(impl, "function", None), "__code__", None)
                out.add((name, code.co_filename if code is not None else "?"))
    except Exception:
        pass
    return out


def _take_snapshot(manager):
    if _state["snapshot"] is None:
        try:
            import unittest  # noqa: F401  (watched from the start, before the code under test can touch it)
            _state["manager"] = manager
            _state["snapshot"] = _entries()
            _state["modules"] = dict((m, _sys.modules.get(m)) for m in WATCHED)
            _state["impls"] = _impls(manager)
        except Exception:
            _state["snapshot"] = []


def _origin(obj):
    fn = getattr(obj, "__func__", None) or getattr(obj, "fget", None) or obj
    code = getattr(fn, "__code__", None)
    if code is not None:
        return code.co_filename
    return getattr(getattr(obj, "__class__", None), "__module__", None) or "?"


def _check(where, hooks=False):
    snap = _state["snapshot"]
    if not snap:
        return
    try:
        found = []
        for modname, mod in _state["modules"].items():
            if mod is not None and _sys.modules.get(modname) is not mod:
                found.append((modname, "sys.modules entry replaced", _origin(_sys.modules.get(modname))))
        missing = object()
        for key, space, name, obj, fn, code in snap:
            cur = space.get(name, missing)
            if cur is not obj:
                found.append((key, "removed", "?") if cur is missing else (key, "replaced", _origin(cur)))
            elif fn is not None and fn.__code__ is not code:
                found.append((key, "code replaced", fn.__code__.co_filename))
        for name, what, origin in found:
            if name not in _state["bad"]:
                _state["bad"].add(name)
                _emit("replaced", name=name, what=what, origin=origin, where=where)
        if hooks:
            for hook, origin in sorted(_impls(_state.get("manager")) - _state["impls"]):
                _state["impls"].add((hook, origin))
                _emit("hookimpl", hook=hook, origin=origin, where=where)
    except Exception:
        pass


# --- raw outcomes --------------------------------------------------------------------------------------

def _names(item):
    nodeid = getattr(item, "nodeid", "?")
    rel = nodeid
    try:
        rel = item.config.cwd_relative_nodeid(nodeid)
    except Exception:
        pass
    return nodeid, rel


def _xfail_marked(item):
    try:
        if hasattr(item, "get_closest_marker"):
            return item.get_closest_marker("xfail") is not None
        if hasattr(item, "get_marker"):
            return item.get_marker("xfail") is not None
        return "xfail" in item.keywords
    except Exception:
        return True  # cannot tell: never judged


def _kind(exc):
    """ok, skip, xfail or fail for an exception a phase raised (None: nothing raised)."""
    if exc is None:
        return "ok"
    names = [c.__name__ for c in type(exc).__mro__]
    if "Skipped" in names or "SkipTest" in names:
        return "skip"
    if "XFailed" in names:
        return "xfail"
    return "fail"


def _phase(item, phase, outcome):
    if _state["config"] is not None and getattr(item, "config", None) is not _state["config"]:
        return  # a nested in-process session (pytester): not the graded run
    try:
        excinfo = getattr(outcome, "excinfo", None)
        kind = _kind(excinfo[1] if excinfo else None)
        pending = getattr(item, "_excinfo", None)  # unittest TestCase results pytest collected in this phase
        if kind == "ok" and phase == "call" and pending:
            kinds = [_kind(e[1]) for e in pending if isinstance(e, tuple) and len(e) > 1]
            kind = "fail" if "fail" in kinds else (kinds[0] if kinds else "fail")
        nodeid, rel = _names(item)
        _emit("phase", id=nodeid, rel=rel, phase=phase, outcome=kind, xfail=_xfail_marked(item))
    except Exception:
        pass


@_first
def pytest_configure(config):
    if _state["config"] is None:
        _state["config"] = config
        option = getattr(config, "option", None)
        dist = getattr(option, "dist", "no") or "no"
        workers = getattr(option, "numprocesses", None)
        if dist != "no" or workers:
            _emit("blind", why="pytest-xdist runs the tests in other processes")


@_wrapper
def pytest_runtest_setup(item):
    outcome = yield
    _phase(item, "setup", outcome)


@_wrapper
def pytest_runtest_call(item):
    outcome = yield
    _phase(item, "call", outcome)


@_wrapper
def pytest_runtest_teardown(item, nextitem):
    outcome = yield
    _phase(item, "teardown", outcome)
    if getattr(item, "config", None) is _state["config"]:
        _check("after " + getattr(item, "nodeid", "?"))


@_first
def pytest_collection_finish(session):
    if getattr(session, "config", None) is _state["config"]:
        _check("after collection", hooks=True)


@_first
def pytest_sessionfinish(session, exitstatus):
    if getattr(session, "config", None) is _state["config"] and not _state["finished"]:
        _state["finished"] = True
        _check("at the end of the session", hooks=True)
        _emit("finished", exitstatus=int(exitstatus) if isinstance(exitstatus, int) else str(exitstatus))
