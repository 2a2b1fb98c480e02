"""OpenAI request bodies -> validated requests. Types are checked strictly: `max_tokens: true` or `"7"`,
`temperature: Infinity`, `stop: {...}` or `top_logprobs: -3` are one clear 400, never a default or a 500.

Limits that are this server's own (documented in `agent.policy.serve`): `n` up to `MAX_N`,
`top_logprobs` (chat) and `logprobs` (completions) up to `MAX_TOP_LOGPROBS`, JSON nested at most
`MAX_JSON_DEPTH` deep, at most `MAX_STOP` stop strings.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from agent.policy.base import SamplingParams
from records.trajectory import Message, ToolCall

MAX_N = 16
"""Most completions one request may ask for (`n`)."""
MAX_TOP_LOGPROBS = 20
"""Most alternatives per token (`top_logprobs` of chat, `logprobs` of completions); OpenAI's own cap."""
MAX_JSON_DEPTH = 64
"""Deepest nesting of arrays and objects a body may have (tool schemas need a few levels)."""
MAX_STOP = 16
"""Most stop strings."""
MAX_PROMPTS = 16
"""Most prompts in one /v1/completions request."""


class BadRequest(ValueError):
    """The request body is not something this server understands (answered with 400)."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class HTTPError(Exception):
    """Answer with `status` and an OpenAI-shaped error."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", code: str | None = None,
                 param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.kind, self.code, self.param = status, kind, code, param


def _no_constants(name: str) -> Any:
    raise BadRequest(f"the body holds {name}, which is not JSON (numbers must be finite)")


def _depth(value: Any) -> int:
    """Nesting depth of a decoded JSON value (iterative: any depth is safe to measure)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, (dict, list)):
            deepest = max(deepest, d)
            if deepest > MAX_JSON_DEPTH:
                return deepest
            stack.extend((c, d + 1) for c in (v.values() if isinstance(v, dict) else v))
    return deepest


def decode_body(data: bytes) -> dict[str, Any]:
    """The JSON object of a request body; BadRequest for anything else (bad UTF-8, NaN, too deep)."""
    try:
        body = json.loads(data or b"{}", parse_constant=_no_constants)
    except RecursionError:
        raise BadRequest(f"the body is nested deeper than this server's limit of {MAX_JSON_DEPTH}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BadRequest(f"the body is not JSON: {e}") from None
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    if _depth(body) > MAX_JSON_DEPTH:
        raise BadRequest(f"the body is nested deeper than this server's limit of {MAX_JSON_DEPTH}")
    return body


# ---- strict field readers ----------------------------------------------------------------------


def _type_name(v: Any) -> str:
    return {bool: "a boolean", str: "a string", dict: "an object", list: "an array", type(None): "null",
            int: "an integer", float: "a number"}.get(type(v), type(v).__name__)


def get_int(body: dict[str, Any], key: str, default: int | None, lo: int | None = None, hi: int | None = None) -> int | None:
    v = body.get(key)
    if v is None:
        return default
    if type(v) is float and v.is_integer():
        v = int(v)
    if type(v) is not int:
        raise BadRequest(f"`{key}` must be an integer, not {_type_name(v)}", key)
    if lo is not None and v < lo:
        raise BadRequest(f"`{key}` must be at least {lo}, not {v}", key)
    if hi is not None and v > hi:
        raise BadRequest(f"`{key}` must be at most {hi}, not {v} (this server's limit)", key)
    return v


def get_float(body: dict[str, Any], key: str, default: float, lo: float, hi: float, lo_open: bool = False) -> float:
    v = body.get(key)
    if v is None:
        return default
    if type(v) not in (int, float) or not math.isfinite(v):
        raise BadRequest(f"`{key}` must be a finite number, not {_type_name(v)}", key)
    if v < lo or (lo_open and v == lo) or v > hi:
        raise BadRequest(f"`{key}` must be in {'(' if lo_open else '['}{lo}, {hi}], not {v}", key)
    return float(v)


def get_bool(body: dict[str, Any], key: str, default: bool = False) -> bool:
    v = body.get(key)
    if v is None:
        return default
    if type(v) is not bool:
        raise BadRequest(f"`{key}` must be true or false, not {_type_name(v)}", key)
    return v


def get_str(body: dict[str, Any], key: str) -> str | None:
    v = body.get(key)
    if v is not None and type(v) is not str:
        raise BadRequest(f"`{key}` must be a string, not {_type_name(v)}", key)
    return v


def get_stop(body: dict[str, Any]) -> list[str]:
    v = body.get("stop")
    if v is None:
        return []
    if isinstance(v, str):
        v = [v]
    if not isinstance(v, list) or not all(isinstance(s, str) for s in v):
        raise BadRequest(f"`stop` must be a string or an array of strings, not {_type_name(v)}", "stop")
    if len(v) > MAX_STOP:
        raise BadRequest(f"`stop` holds {len(v)} strings; this server's limit is {MAX_STOP}", "stop")
    return [s for s in v if s]


def _check_unsupported(body: dict[str, Any]) -> None:
    """Fields this server reads but cannot honour unless they are neutral."""
    for key in ("presence_penalty", "frequency_penalty"):
        if get_float(body, key, 0.0, -2.0, 2.0) != 0.0:
            raise BadRequest(f"`{key}` is not supported by this server (send 0 or leave it out)", key)
    bias = body.get("logit_bias")
    if bias is not None and (not isinstance(bias, dict) or bias):
        raise BadRequest("`logit_bias` is not supported by this server (send {} or leave it out)", "logit_bias")
    fmt = body.get("response_format")
    if fmt is not None and (not isinstance(fmt, dict) or fmt.get("type") != "text"):
        raise BadRequest("`response_format` other than {\"type\": \"text\"} is not supported by this server",
                         "response_format")
    top_k = get_int(body, "top_k", None)
    if top_k is not None and top_k not in (-1, 0):
        raise BadRequest("`top_k` is not supported by this server (send -1 or leave it out)", "top_k")
    get_str(body, "user")
    get_bool(body, "parallel_tool_calls", True)


# ---- requests ----------------------------------------------------------------------------------


@dataclass
class Options:
    """What every generation request asks for besides its prompt."""

    model: str | None
    params: SamplingParams
    n: int = 1
    stream: bool = False
    include_usage: bool = False
    logprobs: bool = False
    top_logprobs: int = 0
    echo: bool = False
    ignore_eos: bool = False
    include_stop: bool = False
    return_token_ids: bool = False
    ids_as_tokens: bool = False


@dataclass
class ChatRequest(Options):
    messages: list[Message] = field(default_factory=list)
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] = "auto"


@dataclass
class CompletionRequest(Options):
    prompts: list[str | list[int]] = field(default_factory=list)


def _options(body: dict[str, Any], *, max_tokens_default: int, max_tokens_cap: int) -> dict[str, Any]:
    _check_unsupported(body)
    max_tokens = get_int(body, "max_completion_tokens", None, 1)
    if max_tokens is None:
        max_tokens = get_int(body, "max_tokens", max_tokens_default, 1)
    if max_tokens > max_tokens_cap:
        raise HTTPError(400, f"max_tokens {max_tokens} is over this server's cap of {max_tokens_cap} "
                             "(evolve serve --max-tokens-cap)", param="max_tokens")
    params = SamplingParams(
        max_tokens=max_tokens,
        temperature=get_float(body, "temperature", 1.0, 0.0, 2.0),
        top_p=get_float(body, "top_p", 1.0, 0.0, 1.0, lo_open=True),
        stop=get_stop(body),
        seed=get_int(body, "seed", None, -(2**63), 2**64 - 1),
    )
    stream = get_bool(body, "stream")
    stream_options = body.get("stream_options")
    if stream_options is not None and not isinstance(stream_options, dict):
        raise BadRequest("`stream_options` must be an object", "stream_options")
    include_usage = get_bool(stream_options or {}, "include_usage")
    if stream_options is not None and not stream:
        raise BadRequest("`stream_options` is only allowed with `stream: true`", "stream_options")
    model = get_str(body, "model")
    return dict(
        model=model, params=params, n=get_int(body, "n", 1, 1, MAX_N), stream=stream, include_usage=include_usage,
        ignore_eos=get_bool(body, "ignore_eos"), include_stop=get_bool(body, "include_stop_str_in_output"),
        return_token_ids=get_bool(body, "return_token_ids"), ids_as_tokens=get_bool(body, "return_tokens_as_token_ids"),
    )


def _text(content: Any, where: str) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI content parts
        parts = []
        for p in content:
            if not isinstance(p, dict) or p.get("type", "text") != "text" or not isinstance(p.get("text"), str):
                raise BadRequest(f"{where}: only text content parts are supported", "messages")
            parts.append(p["text"])
        return "".join(parts)
    raise BadRequest(f"{where}: unsupported content {_type_name(content)}", "messages")


def parse_messages(raw: Any) -> list[Message]:
    """OpenAI chat messages -> Messages (tool-call arguments decoded from JSON)."""
    if not isinstance(raw, list) or not raw:
        raise BadRequest("`messages` must be a non-empty list", "messages")
    out = []
    for i, m in enumerate(raw):
        if not isinstance(m, dict):
            raise BadRequest(f"`messages[{i}]` must be an object", "messages")
        role = m.get("role")
        if role not in ("system", "user", "assistant", "tool", "developer"):
            raise BadRequest(f"unsupported role {role!r} in `messages[{i}]`", "messages")
        calls = []
        raw_calls = m.get("tool_calls") or []
        if not isinstance(raw_calls, list):
            raise BadRequest(f"`messages[{i}].tool_calls` must be an array", "messages")
        for c in raw_calls:
            fn = c.get("function", c) if isinstance(c, dict) else None
            if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
                raise BadRequest(f"`messages[{i}].tool_calls` entries need a function name", "messages")
            args = fn.get("arguments") or {}
            if isinstance(args, str):
                try:
                    args = json.loads(args) if args.strip() else {}
                except json.JSONDecodeError:
                    args = {"_raw_arguments": args}
            if not isinstance(args, dict):
                args = {"_raw_arguments": args}
            call_id = c.get("id")
            calls.append(ToolCall(name=fn["name"], arguments=args, id=call_id if isinstance(call_id, str) else None))
        name = m.get("name")
        out.append(Message(role="system" if role == "developer" else role,
                           content=_text(m.get("content"), f"messages[{i}]"), tool_calls=calls,
                           name=name if isinstance(name, str) else None))
    return out


def parse_tools(raw: Any) -> list[dict[str, Any]] | None:
    """OpenAI tool schemas: a list of `{"type": "function", "function": {"name": ..., ...}}`."""
    if raw is None or raw == []:
        return None
    if not isinstance(raw, list):
        raise BadRequest("`tools` must be a list of tool schemas", "tools")
    for i, tool in enumerate(raw):
        fn = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or tool.get("type", "function") != "function":
            raise BadRequest(f"`tools[{i}]` must be {{\"type\": \"function\", \"function\": {{\"name\": ...}}}}", "tools")
        if not isinstance(fn.get("parameters", {}), dict):
            raise BadRequest(f"`tools[{i}].function.parameters` must be a JSON schema object", "tools")
    return raw


def parse_tool_choice(raw: Any, tools: list[dict[str, Any]] | None) -> str | dict[str, Any]:
    """`none`, `auto`, `required` or `{"type": "function", "function": {"name": NAME}}` naming a given tool."""
    if raw is None:
        return "auto" if tools else "none"
    if raw in ("none", "auto", "required"):
        if raw == "required" and not tools:
            raise BadRequest("`tool_choice: required` needs `tools`", "tool_choice")
        return raw
    name = raw.get("function", {}).get("name") if isinstance(raw, dict) and isinstance(raw.get("function"), dict) else None
    if not isinstance(name, str) or raw.get("type", "function") != "function":
        raise BadRequest("`tool_choice` must be none, auto, required or "
                         "{\"type\": \"function\", \"function\": {\"name\": ...}}", "tool_choice")
    if name not in [t["function"]["name"] for t in tools or []]:
        raise BadRequest(f"`tool_choice` names {name!r}, which is not one of `tools`", "tool_choice")
    return raw


def parse_chat(body: dict[str, Any], *, max_tokens_default: int, max_tokens_cap: int) -> ChatRequest:
    options = _options(body, max_tokens_default=max_tokens_default, max_tokens_cap=max_tokens_cap)
    logprobs = get_bool(body, "logprobs")
    top = get_int(body, "top_logprobs", 0, 0, MAX_TOP_LOGPROBS)
    if top and not logprobs:
        raise BadRequest("`top_logprobs` needs `logprobs: true`", "top_logprobs")
    tools = parse_tools(body.get("tools"))
    return ChatRequest(**options, logprobs=logprobs, top_logprobs=top, messages=parse_messages(body.get("messages")),
                       tools=tools, tool_choice=parse_tool_choice(body.get("tool_choice"), tools))


def parse_completion(body: dict[str, Any], *, max_tokens_cap: int) -> CompletionRequest:
    options = _options(body, max_tokens_default=16, max_tokens_cap=max_tokens_cap)  # OpenAI's default is 16
    logprobs = get_int(body, "logprobs", None, 0, MAX_TOP_LOGPROBS)
    echo = get_bool(body, "echo")
    if get_str(body, "suffix"):
        raise BadRequest("`suffix` is not supported by this server", "suffix")
    if get_int(body, "best_of", 1, 1, 1) != 1:
        raise BadRequest("`best_of` is not supported by this server", "best_of")
    raw = body.get("prompt")
    if isinstance(raw, str) or (isinstance(raw, list) and raw and all(type(t) is int for t in raw)):
        prompts = [raw]
    elif isinstance(raw, list) and raw and all(
            isinstance(p, str) or (isinstance(p, list) and p and all(type(t) is int for t in p)) for p in raw):
        prompts = list(raw)
    else:
        raise BadRequest("`prompt` must be a string, an array of token ids, or an array of those", "prompt")
    if len(prompts) > MAX_PROMPTS:
        raise BadRequest(f"`prompt` holds {len(prompts)} prompts; this server's limit is {MAX_PROMPTS}", "prompt")
    if any(isinstance(p, list) and min(p) < 0 for p in prompts):
        raise BadRequest("token ids in `prompt` must be non-negative", "prompt")
    return CompletionRequest(**options, logprobs=logprobs is not None, top_logprobs=logprobs or 0, echo=echo,
                             prompts=prompts)
