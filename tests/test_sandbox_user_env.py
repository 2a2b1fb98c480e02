"""Agent commands run in the environment a user of the image gets (issue: SWE-bench images activate
`conda activate testbed` only from /root/.bashrc, behind Ubuntu's "not interactive: return" guard)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from sandbox import SandboxConfig
from sandbox.config import BASE_IMAGE

pytestmark = pytest.mark.usefixtures("docker_ready")

IMAGE = "evolve-test-bashrc:latest"
# as SWE-bench's images: a venv made at build time, activated by lines appended to a .bashrc that starts
# with the usual guard, so only an interactive shell activates it
DOCKERFILE = f"""FROM {BASE_IMAGE}
RUN python3 -m venv --without-pip --system-site-packages /opt/testbed \\
 && printf '# ~/.bashrc\\n[ -z "$PS1" ] && return\\nalias ll="ls -l"\\n' > /root/.bashrc \\
 && echo 'source /opt/testbed/bin/activate && export EVOLVE_ACTIVATED=testbed' >> /root/.bashrc \\
 && printf '#!/bin/sh\\necho never\\n' > /opt/testbed/bin/evolve-only-in-venv
LABEL evolve.sandbox=1 evolve.run=test-bashrc
"""


@pytest.fixture(scope="module")
def bashrc_image():
    from sandbox.docker import docker_client

    client = docker_client()
    client.images.build(fileobj=io.BytesIO(DOCKERFILE.encode()), tag=IMAGE, rm=True, network_mode="none")
    yield IMAGE
    client.images.remove(IMAGE, force=True)


def test_agent_commands_get_the_activated_environment(bashrc_image: str, repo: Path):
    from sandbox.docker import DockerSandbox

    with DockerSandbox.start(SandboxConfig(), image=bashrc_image, workspace=repo) as sb:
        r = sb.exec("python -c 'import sys; print(sys.prefix)'; echo $EVOLVE_ACTIVATED; command -v python")
        assert r.output.split() == ["/opt/testbed", "testbed", "/opt/testbed/bin/python"], r.output
        # sessions start from it too, and keep their own changes on top
        assert sb.exec("echo $VIRTUAL_ENV", session="s").output.strip() == "/opt/testbed"
        sb.exec("deactivate 2>/dev/null; export PATH=/usr/bin:/bin", session="s")
        assert sb.exec("command -v python", session="s").output.strip() == "/usr/bin/python"
        assert sb.exec("echo $PWD; echo ${PS1:-no prompt}").output.split("\n")[:2] == ["/testbed", "no prompt"]


def test_plain_images_keep_their_environment(repo: Path):
    from sandbox.docker import DockerSandbox

    with DockerSandbox.start(SandboxConfig(), workspace=repo) as sb:
        assert sb.exec("command -v python3; echo $PAGER; echo $HOME").output.split() == [
            "/usr/bin/python3", "cat", "/root"]
