"""The LangGraph agent loop against a real Docker sandbox, with scripted and tiny real policies."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.graph import Agent
from agent.parsing import parse_tool_calls
from agent.replay import ScriptedPolicy, replay_actions
from agent.variant import AgentVariant, Budget, VariantError
from records import TaskInstance, TrajectoryStatus
from sandbox import SandboxConfig, start_sandbox


def call(name: str, **params) -> str:
    return f"<think>step</think>\n<tool_call>\n{json.dumps({'name': name, 'parameters': params})}\n</tool_call>"


INSTANCE = TaskInstance(instance_id="calc-1", problem_statement="add() should subtract. (a test of the loop)")

FIX = [
    call("bash", command="cd tests && ls"),
    call("bash", command="pwd"),  # the shell kept the cd
    call("view", path="calc.py"),
    "I will just talk without a tool call",
    call("str_replace", path="calc.py", old_str="return a + b", new_str="return a - b"),
    call("search", query="add", kind="definition"),
    call("search", query="add", kind="references"),
    call("nonexistent_tool"),
    '<think>x</think>\n<tool_call>\n{"name": "bash", "parameters": \n</tool_call>',
    call("str_replace", path="calc.py", old_str="no such text", new_str="x"),
    call("submit"),
]


@pytest.fixture(params=["docker", "local"])
def sandbox(request, repo: Path):
    if request.param == "docker":
        request.getfixturevalue("docker_ready")
    else:
        from tests.conftest import bwrap_works

        if not bwrap_works():
            pytest.skip("bubblewrap cannot create namespaces here")
    sb = start_sandbox(SandboxConfig(backend=request.param), workspace=repo)
    yield sb
    sb.stop()


def test_episode_records_every_step_and_submits_the_patch(sandbox):
    recorded = []
    agent = Agent(ScriptedPolicy(FIX), on_step=lambda traj, step: recorded.append(step.index))
    traj = agent.run(INSTANCE, sandbox)
    assert traj.status == TrajectoryStatus.submitted
    assert recorded == list(range(len(FIX)))
    obs = [s.observation.content if s.observation else "" for s in traj.steps]
    assert "test_calc.py" in obs[0] and "/testbed/tests" in obs[1]
    assert "     1\tdef add(a, b):" in obs[2]
    assert traj.steps[3].parse_error and "no <tool_call>" in obs[3]
    assert "def add(a, b)" in obs[5] and "calc.py" in obs[5]
    assert "tests/test_calc.py" in obs[6]
    assert "unknown tool" in obs[7]
    assert traj.steps[8].parse_error and "not valid JSON" in obs[8]
    assert "not found" in obs[9]
    assert "-    return a + b" in traj.patch and "+    return a - b" in traj.patch
    assert traj.agent_variant.startswith("default@")


def test_budget_ends_the_episode(sandbox):
    variant = AgentVariant.load()
    variant.budget = Budget(max_steps=3)
    traj = Agent(ScriptedPolicy([call("bash", command="echo hi")] * 10), variant=variant).run(INSTANCE, sandbox)
    assert traj.status == TrajectoryStatus.budget_exhausted and len(traj.steps) == 3 and traj.truncated


def test_context_limit_ends_the_episode(sandbox):
    traj = Agent(ScriptedPolicy([call("bash", command="echo hi")] * 5, context_length=300)).run(INSTANCE, sandbox)
    assert traj.status == TrajectoryStatus.context_exceeded


def test_replay_rebuilds_the_state_at_a_step(sandbox, repo: Path):
    traj = Agent(ScriptedPolicy(FIX)).run(INSTANCE, sandbox)
    with start_sandbox(SandboxConfig(backend="local" if "Local" in type(sandbox).__name__ else "docker"),
                       workspace=repo) as fresh:
        replay_actions(traj, 4, fresh)  # before the edit
        assert fresh.diff() == ""
        replay_actions(traj.model_copy(update={"steps": traj.steps[4:5]}), 1, fresh)
        assert fresh.diff() == traj.patch


def test_dead_sandbox_ends_the_episode_with_an_error(repo: Path, docker_ready):
    from sandbox.docker import DockerSandbox, docker_client

    sb = DockerSandbox.start(workspace=repo)
    steps = [call("bash", command="echo 1"), call("bash", command="echo 2")]

    def kill_after_first(traj, step):
        if step.index == 0:
            docker_client().api.kill(sb.container.id)

    traj = Agent(ScriptedPolicy(steps), on_step=kill_after_first).run(INSTANCE, sb)
    sb.stop()
    assert traj.status == TrajectoryStatus.error and "died" in (traj.error or "")
    assert len(traj.steps) == 2 and "the sandbox died" in traj.steps[1].observation.content  # the step it ended
    assert not traj.sandbox_ended_by_agent  # killed from outside: not the agent's doing


@pytest.mark.parametrize("text,names,error", [
    (call("bash", command="ls"), ["bash"], None),
    ('<tool_call>\n{"name": "a", "arguments": {"x": 1}}\n{"name": "b", "parameters": {}}\n</tool_call>', ["a", "b"], None),
    ('<tool_call>\n{"name": "a", "parameters": "{\\"x\\": 1}"}\n</tool_call>', ["a"], None),
    ("no call at all", [], "no <tool_call>"),
    ("<tool_call>\n\n</tool_call>", [], "empty"),
    ('<tool_call>\n["a"]\n</tool_call>', [], "must be an object"),
    ('<tool_call>\n{"name": "a", "parameters": [1]}\n</tool_call>', [], "JSON object"),
    ('<tool_call>\n{"name": "a", "parameters": {}}', ["a"], None),  # cut at the stop string
])
def test_parse_tool_calls(text, names, error):
    calls, err = parse_tool_calls(text)
    assert [c.name for c in calls] == names
    assert (err is None) if error is None else (error in err)


def test_branch_from_the_middle_and_continue(sandbox, repo: Path):
    parent = Agent(ScriptedPolicy(FIX)).run(INSTANCE, sandbox)
    k = 3  # branch after viewing the file, before the edit
    child = parent.model_copy(deep=True, update={"id": "child", "parent_id": parent.id, "branch_step": k,
                                                 "steps": parent.steps[:k], "patch": ""})
    backend = "local" if "Local" in type(sandbox).__name__ else "docker"
    with start_sandbox(SandboxConfig(backend=backend), workspace=repo) as fresh:
        replay_actions(parent, k, fresh)
        other_fix = call("str_replace", path="calc.py", old_str="return a + b", new_str="return -(b - a) - 2 * b + 2 * a - a")
        responses = [s.response.content for s in parent.steps[:k]] + [other_fix, call("submit")]
        done = Agent(ScriptedPolicy(responses)).run(INSTANCE, fresh, child)
    assert done.parent_id == parent.id and done.branch_step == k
    assert [s.response.content for s in done.steps[:k]] == [s.response.content for s in parent.steps[:k]]
    assert len(done.steps) == k + 2 and "return -(b - a)" in done.patch


def test_real_policies_record_tokens_and_logprobs(repo: Path, tmp_path: Path, docker_ready):
    """The tiny transformers model, directly and behind the OpenAI-compatible server, drives real episodes."""
    from agent.policy import load_policy
    from agent.policy.server import serve_in_thread
    from tests.tiny_model import build_tiny_model

    variant = AgentVariant.load()
    variant.budget = Budget(max_steps=2)
    variant.max_tokens_per_step = 12
    policy = load_policy(f"hf:{build_tiny_model(tmp_path / 'tiny')}")
    server = serve_in_thread(policy)
    try:
        for pol in (policy, load_policy(f"openai:{server.url}")):
            with start_sandbox(SandboxConfig(), workspace=repo) as sb:
                traj = Agent(pol, variant=variant).run(INSTANCE, sb)
            assert len(traj.steps) == 2 and traj.status == TrajectoryStatus.budget_exhausted
            for step in traj.steps:
                r = step.response
                assert r.token_ids and r.logprobs and len(r.token_ids) == len(r.logprobs) == step.completion_tokens
                assert all(lp <= 0 for lp in r.logprobs)
                assert step.observation is not None  # the garbage output got a format-error observation
    finally:
        server.stop()


class _NativeToolServer:
    """A stand-in for a hosted OpenAI-compatible model that answers with native `tool_calls` (no such model
    runs here): first a bash call, then submit. It records the requests it got."""

    def __init__(self):
        import http.server
        import threading

        self.requests: list[dict] = []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if not self.path.endswith("/chat/completions"):  # e.g. vLLM's /tokenize: not offered
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                owner.requests.append(body)
                turn = sum(m["role"] == "assistant" for m in body["messages"])
                name, args = ("bash", {"command": "echo native"}) if turn == 0 else ("submit", {})
                msg = {"role": "assistant", "content": "",
                       "tool_calls": [{"id": f"c{turn}", "type": "function",
                                       "function": {"name": name, "arguments": json.dumps(args)}}]}
                data = json.dumps({"choices": [{"message": msg, "finish_reason": "tool_calls"}],
                                   "usage": {"prompt_tokens": 10, "completion_tokens": 5}}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1#hosted"


def test_native_tool_calling_through_an_openai_compatible_server(repo: Path, docker_ready):
    from agent.policy import load_policy

    server = _NativeToolServer()
    variant = AgentVariant.load()
    variant.native_tools = True
    try:
        policy = load_policy(f"openai:{server.url}", context_length=100_000)
        with start_sandbox(SandboxConfig(), workspace=repo) as sb:
            traj = Agent(policy, variant=variant).run(INSTANCE, sb)
    finally:
        server.httpd.shutdown()
    assert traj.status == TrajectoryStatus.submitted
    assert [c.name for c in traj.steps[0].tool_calls] == ["bash"] and traj.steps[0].parse_error is None
    assert traj.steps[0].observation.role == "tool" and "native" in traj.steps[0].observation.content
    tools = server.requests[0]["tools"]
    assert {t["function"]["name"] for t in tools} == set(variant.tools)
    assert server.requests[1]["messages"][-1]["role"] == "tool"


def test_a_variant_directory_round_trips_and_drives_the_agent(sandbox, tmp_path: Path):
    variant = AgentVariant.load()
    variant.name = "terse"
    variant.instance_template = "Fix: {problem_statement} (repo at {workdir})"
    variant.tools = ["bash", "submit"]
    loaded = AgentVariant.load(variant.save(tmp_path / "terse"))
    assert loaded == variant and loaded.fingerprint() == variant.fingerprint()
    traj = Agent(ScriptedPolicy([call("view", path="calc.py")]), variant=loaded).run(INSTANCE, sandbox)
    assert traj.prompt[1].content.startswith("Fix: add() should subtract")
    assert "unknown tool 'view'" in traj.steps[0].observation.content
    assert traj.agent_variant.startswith("terse@")
    with pytest.raises(VariantError, match="not an agent variant"):
        AgentVariant.load(tmp_path / "nothing")
