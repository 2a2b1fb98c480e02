"""Task workspaces for the local (bubblewrap) sandbox, which starts from a directory, not an image.

A bundled instance names a Docker image tag; for `--sandbox local` its repository is materialised once
per run directory (`<run dir>/workspaces/<repo>-<commit>`, checked against the instance's base commit)
and the instance is pointed at that directory. Both the agent's sandbox and the grading sandbox start
from copies of it. SWE-bench instances exist only as Docker images, so they are refused with a clear
message.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
from pathlib import Path

from records import TaskInstance
from sandbox import SandboxError, start_sandbox
from tasks.bundled.materialize import MaterializeError, materialize

_lock = threading.Lock()


def local_refusal(instances: list[TaskInstance]) -> str | None:
    """Why the local sandbox cannot run these instances (the first that it cannot), else None; cheap, so a run
    can refuse before it loads a policy."""
    for instance in instances:
        if not (instance.image and Path(instance.image).is_dir()) and not instance.repo.startswith("evolve-bundled/"):
            return (f"{instance.instance_id}: the local sandbox needs the task's repository as a directory, and "
                    f"{instance.suite or 'this suite'} instances exist only as Docker images; use --sandbox docker")
    return None


def local_instance(instance: TaskInstance, root: Path) -> TaskInstance:
    """`instance` with `image` set to a workspace directory the local sandbox can start from."""
    if instance.image and Path(instance.image).is_dir():
        return instance
    why = local_refusal([instance])
    if why:
        raise SandboxError(why)
    name = instance.repo.split("/", 1)[1]
    dest = root / f"{name}-{instance.base_commit[:12]}"
    with _lock:
        if not (dest / ".git").is_dir():
            root.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=root))
            try:
                head = materialize(name, tmp / "repo")
                if head != instance.base_commit:
                    raise SandboxError(f"{name} materialised at {head[:12]}, but {instance.instance_id} expects "
                                       f"{instance.base_commit[:12]}: the bundled data is inconsistent")
                shutil.rmtree(dest, ignore_errors=True)
                (tmp / "repo").rename(dest)
            except MaterializeError as e:
                raise SandboxError(f"cannot materialise {name} for the local sandbox: {e}") from None
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    return instance.model_copy(update={"image": str(dest)})


def check_local_python(config, instance: TaskInstance) -> None:
    """The bundled tasks' tests run with `python3 -m pytest` inside the sandbox, which sees the host's /usr:
    refuse at once (SandboxError) when that Python has no pytest, instead of failing every grading."""
    with start_sandbox(config, workspace=instance.image) as sb:
        r = sb.exec("python3 -c 'import pytest'", timeout=60)
    if r.exit_code != 0:
        raise SandboxError("the local sandbox grades with the host's python3, which cannot import pytest "
                           f"({r.output.strip().splitlines()[-1][:120] if r.output.strip() else 'no output'}): "
                           "install it (`apt-get install python3-pytest`) or use --sandbox docker")
