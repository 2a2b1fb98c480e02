"""`openai:URL[#MODEL]`: any OpenAI-compatible chat server (vLLM, llama.cpp, a hosted API) over httpx.

Batched `generate` sends the conversations concurrently (bounded by `concurrency`). Requests are
retried with exponential backoff on connection errors, timeouts, 5xx and 429. With `logprobs` the
server's per-token log-probs are returned; token ids too when the server gives them (vLLM with
`return_tokens_as_token_ids`, or the non-standard `token_id` field of `agent.policy.server`).
A server that rejects those vLLM extras with a 400 is asked again without them (ids then None).
"""

from __future__ import annotations

import json
import logging
import os
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field

from agent.policy.base import Generation, Policy, PolicyError, SamplingParams, message_dicts
from records.trajectory import Message, ToolCall

log = logging.getLogger(__name__)

VLLM_EXTRAS = {"return_tokens_as_token_ids": True}
"""Non-standard request fields asking vLLM-like servers for token ids in the log-probs."""


class OpenAIConfig(BaseModel):
    """Options of the OpenAI-compatible client."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = None
    """Model name sent in requests (also `openai:URL#MODEL`); None: the first of the server's /v1/models."""
    api_key: str | None = None
    """Bearer token; None reads $OPENAI_API_KEY (no header when unset)."""
    timeout_s: float = 600.0
    """Read timeout of one request (long completions on slow servers take minutes)."""
    connect_timeout_s: float = 10.0
    """Connect timeout."""
    max_retries: int = 5
    """Retries of a request after a timeout, a dropped connection, a 5xx or a 429."""
    connect_retries: int = 2
    """Retries after `connection refused` before giving up (kept small: usually the server is not running)."""
    backoff_s: float = 0.5
    """First retry delay; doubles each retry (with jitter), capped at `max_backoff_s`."""
    max_backoff_s: float = 20.0
    """Longest retry delay."""
    concurrency: int = Field(default=8, ge=1)
    """Most requests in flight at once."""
    logprobs: bool = True
    """Ask for per-token log-probs (and token ids when the server can give them)."""
    token_ids: bool = True
    """Send vLLM's `return_tokens_as_token_ids` so log-prob tokens carry ids (dropped if the server refuses)."""
    context_length: int | None = None
    """Context window; None asks the server (/v1/models `max_model_len`), else 8192."""
    extra_body: dict[str, Any] = Field(default_factory=dict)
    """Extra JSON fields sent with every chat request (e.g. `{"top_k": 20}` for vLLM)."""


def _base_url(url: str) -> str:
    url = url.rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise PolicyError(f"bad server URL {url!r}: write openai:http://HOST:PORT/v1[#MODEL]")
    return url if url.endswith("/v1") else url + "/v1"


def _token_id(entry: dict[str, Any]) -> int | None:
    if isinstance(entry.get("token_id"), int):
        return entry["token_id"]
    token = entry.get("token")
    if isinstance(token, str) and token.startswith("token_id:"):
        try:
            return int(token[len("token_id:") :])
        except ValueError:
            return None
    return None


def _wire_messages(messages: list[Message]) -> list[dict[str, Any]]:
    """Messages in OpenAI wire format; tool results get the `tool_call_id` of the call they answer."""
    out = message_dicts(messages, arguments_as_json=True)
    pending: list[dict[str, Any]] = []  # unanswered calls of the last assistant message
    for d in out:
        if d["role"] == "assistant":
            pending = list(d.get("tool_calls") or [])
        elif d["role"] == "tool" and pending:
            match = next((c for c in pending if c["function"]["name"] == d.get("name")), pending[0])
            pending.remove(match)
            d["tool_call_id"] = match["id"]
    return out


def _parse_tool_calls(raw: list[dict[str, Any]] | None) -> list[ToolCall]:
    calls = []
    for c in raw or []:
        fn = c.get("function") or {}
        args: Any = fn.get("arguments") or {}
        if isinstance(args, str):
            try:
                args = json.loads(args) if args.strip() else {}
            except json.JSONDecodeError:
                args = {"_raw_arguments": args}
        if not isinstance(args, dict):
            args = {"_raw_arguments": args}
        calls.append(ToolCall(name=fn.get("name", ""), arguments=args, id=c.get("id")))
    return calls


class OpenAIPolicy(Policy):
    """A client of an OpenAI-compatible /v1/chat/completions endpoint."""

    def __init__(self, url: str, **options: Any) -> None:
        url, _, fragment = url.partition("#")
        if fragment and options.get("model") not in (None, fragment):
            raise PolicyError(f"model given twice: #{fragment} and model={options['model']!r}")
        self.config = OpenAIConfig(**({"model": fragment} if fragment else {}) | options)
        self.base = _base_url(url)
        self.spec = f"openai:{url}" + (f"#{fragment}" if fragment else "")
        key = self.config.api_key or os.environ.get("OPENAI_API_KEY")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        timeout = httpx.Timeout(self.config.timeout_s, connect=self.config.connect_timeout_s)
        limits = httpx.Limits(max_connections=self.config.concurrency, max_keepalive_connections=self.config.concurrency)
        self.client = httpx.Client(headers=headers, timeout=timeout, limits=limits)
        self.pool = ThreadPoolExecutor(max_workers=self.config.concurrency, thread_name_prefix="openai-policy")
        self._send_extras = self.config.logprobs and self.config.token_ids
        self._tokenize_ok = True
        self._model_card: dict[str, Any] | None = None
        self._lock = threading.Lock()

    # ---- HTTP -------------------------------------------------------------------------------

    def _request(self, method: str, url: str, body: dict[str, Any] | None = None) -> httpx.Response:
        """One request with retries; raises PolicyError when the server cannot be reached or refuses."""
        cfg = self.config
        attempt = connect_failures = 0
        while True:
            delay = min(cfg.backoff_s * 2**attempt, cfg.max_backoff_s) * (0.5 + random.random() / 2)
            try:
                response = self.client.request(method, url, json=body)
            except httpx.ConnectError as e:
                connect_failures += 1
                if connect_failures > cfg.connect_retries:
                    raise PolicyError(f"cannot reach {url} ({e}); start the server or check the URL") from e
                delay = min(delay, 0.5)
            except (httpx.TimeoutException, httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as e:
                if attempt >= cfg.max_retries:
                    raise PolicyError(f"{url} did not answer after {attempt + 1} tries ({type(e).__name__}: {e}); "
                                      "check that the server is healthy, or raise timeout_s") from e
                log.warning("%s: %s, retrying in %.1f s", url, type(e).__name__, delay)
            else:
                status = response.status_code
                if status < 400:
                    return response
                if status != 429 and status < 500:
                    return response  # the caller decides (4xx are not retried)
                if attempt >= cfg.max_retries:
                    raise PolicyError(f"{url} answered {status} after {attempt + 1} tries: {response.text[:500]}")
                retry_after = response.headers.get("Retry-After")
                if retry_after and retry_after.replace(".", "", 1).isdigit():
                    delay = min(float(retry_after), cfg.max_backoff_s)
                log.warning("%s answered %d, retrying in %.1f s", url, status, delay)
            attempt += 1
            time.sleep(delay)

    def _raise_for(self, response: httpx.Response) -> None:
        if response.status_code < 400:
            return
        hint = {401: "; set OPENAI_API_KEY or api_key", 403: "; check the API key's permissions",
                404: "; check the URL (it should end in /v1) and the model name"}.get(response.status_code, "")
        raise PolicyError(f"{response.request.url} answered {response.status_code}: {response.text[:500]}{hint}")

    def _card(self) -> dict[str, Any]:
        """This model's entry of /v1/models (fetched once)."""
        with self._lock:
            if self._model_card is None:
                response = self._request("GET", f"{self.base}/models")
                self._raise_for(response)
                data = response.json().get("data") or []
                if not data:
                    raise PolicyError(f"{self.base}/models lists no models")
                wanted = self.config.model
                self._model_card = next((m for m in data if m.get("id") == wanted), None) or (
                    data[0] if wanted is None else {"id": wanted}
                )
            return self._model_card

    @property
    def model(self) -> str:
        return self.config.model or self._card()["id"]

    # ---- Policy -----------------------------------------------------------------------------

    @property
    def context_length(self) -> int:
        if self.config.context_length:
            return self.config.context_length
        try:
            n = self._card().get("max_model_len")
        except PolicyError:
            n = None
        return int(n) if n else 8192

    def count_tokens(self, messages: list[Message]) -> int:
        """Exact count from the server's vLLM-style /tokenize; else an estimate (4 characters a token)."""
        if self._tokenize_ok:
            root = self.base.removesuffix("/v1")
            body = {"model": self.model, "messages": _wire_messages(messages), "add_generation_prompt": True}
            try:
                response = self.client.post(f"{root}/tokenize", json=body)
                if response.status_code == 200 and "count" in response.json():
                    return int(response.json()["count"])
            except (httpx.HTTPError, ValueError):
                pass
            self._tokenize_ok = False
            log.info("%s has no /tokenize: estimating token counts", root)
        return sum(len(m.content) // 4 + 4 for m in messages) + 2

    def generate(
        self,
        conversations: list[list[Message]],
        params: SamplingParams,
        tools: list[dict[str, Any]] | None = None,
    ) -> list[Generation]:
        seeds = [None if params.seed is None else params.seed + i for i in range(len(conversations))]
        return list(self.pool.map(lambda c, s: self._one(c, params, tools, s), conversations, seeds))

    def _one(self, messages: list[Message], params: SamplingParams, tools: list[dict[str, Any]] | None,
             seed: int | None) -> Generation:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": _wire_messages(messages),
            "max_tokens": params.max_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            **self.config.extra_body,
        }
        if params.stop:
            body["stop"] = params.stop
        if seed is not None:
            body["seed"] = seed
        if tools:
            body["tools"] = tools
        if self.config.logprobs:
            body["logprobs"] = True
        url = f"{self.base}/chat/completions"
        extras = self._send_extras
        response = self._request("POST", url, body | VLLM_EXTRAS if extras else body)
        if extras and response.status_code in (400, 422):
            response = self._request("POST", url, body)
            if response.status_code < 400:
                log.info("%s refuses %s: token ids will be missing", url, list(VLLM_EXTRAS))
                self._send_extras = False
        self._raise_for(response)
        return self._parse(response.json(), params)

    def _parse(self, data: dict[str, Any], params: SamplingParams) -> Generation:
        try:
            choice = data["choices"][0]
        except (KeyError, IndexError, TypeError) as e:
            raise PolicyError(f"unexpected answer from {self.base}: {str(data)[:500]}") from e
        message = choice.get("message") or {}
        text = message.get("content") or ""
        finish = choice.get("finish_reason") or "stop"
        stop_reason = choice.get("stop_reason")
        if finish == "stop" and isinstance(stop_reason, str) and stop_reason in params.stop and not text.endswith(stop_reason):
            text += stop_reason  # OpenAI servers drop the stop string; Evolve keeps it (see base.py)
        token_ids = logprobs = None
        content = (choice.get("logprobs") or {}).get("content")
        if content:
            logprobs = [float(e.get("logprob", 0.0)) for e in content]
            ids = [_token_id(e) for e in content]
            token_ids = None if any(i is None for i in ids) else ids  # type: ignore[assignment]
        usage = data.get("usage") or {}
        completion_tokens = usage.get("completion_tokens") or (len(content) if content else 0)
        return Generation(
            text=text,
            token_ids=token_ids,
            logprobs=logprobs,
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(completion_tokens),
            finish_reason=finish,
            tool_calls=_parse_tool_calls(message.get("tool_calls")),
        )

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.client.close()
