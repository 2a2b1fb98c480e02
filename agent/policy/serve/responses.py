"""Engine events -> OpenAI response bodies and streamed chunks (chat and text completions).

Log-probs are as OpenAI defines them: chat `logprobs.content[i] = {token, logprob, bytes, top_logprobs}`
(`top_logprobs[j] = {token, logprob, bytes}`), completions `logprobs = {tokens, token_logprobs,
top_logprobs, text_offset}`. Extensions, named as vLLM names them: `return_token_ids: true` adds
`choices[i].token_ids` (and `prompt_token_ids`: top level for chat, per choice for completions);
`return_tokens_as_token_ids: true` writes each token as `"token_id:N"`. Every chat log-prob entry also
carries its `token_id` (Evolve's trainer reads it). `stop_reason` is the stop string that ended a choice
(vLLM's field); `content` leaves it out unless `include_stop_str_in_output: true` (vLLM's option).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from agent.policy.serve import toolcalls
from agent.policy.serve.engine import Engine, Finish, Prompt, Token
from agent.policy.serve.schema import ChatRequest, CompletionRequest, Options


@dataclass
class ChoiceState:
    """What one choice has produced so far."""

    index: int
    ids: list[int] = field(default_factory=list)
    entries: list[Token] = field(default_factory=list)
    text: str = ""
    finish: Finish | None = None
    splitter: toolcalls.StreamSplitter | None = None
    started: bool = False
    prompt: Prompt | None = None


def _token_str(engine: Engine, tid: int, options: Options) -> tuple[str, bytes]:
    text, raw = engine.token_text(tid)
    return (f"token_id:{tid}" if options.ids_as_tokens else text), raw


def chat_logprob_entries(engine: Engine, tokens: list[Token], options: Options) -> list[dict[str, Any]]:
    out = []
    for t in tokens:
        if t.token_id is None:
            continue
        token, raw = _token_str(engine, t.token_id, options)
        top = []
        for tid, lp in t.top:
            alt, alt_raw = _token_str(engine, tid, options)
            top.append({"token": alt, "logprob": lp, "bytes": list(alt_raw), "token_id": tid})
        out.append({"token": token, "logprob": t.logprob, "bytes": list(raw), "top_logprobs": top,
                    "token_id": t.token_id})
    return out


def completion_logprobs(engine: Engine, tokens: list[Token], options: Options, offset: int,
                        prompt: Prompt | None = None) -> dict[str, Any]:
    """The completions `logprobs` object for `tokens` (after the echoed prompt's tokens when given)."""
    out: dict[str, Any] = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
    rows: list[tuple[int, float | None, list[tuple[int, float]] | None]] = []
    if prompt is not None:
        for i, tid in enumerate(prompt.token_ids):
            lp = prompt.logprobs[i] if prompt.logprobs is not None and i < len(prompt.logprobs) else None
            rows.append((tid, None if lp is None else lp[0], None if lp is None else lp[1]))
    rows += [(t.token_id, t.logprob, t.top) for t in tokens if t.token_id is not None]
    for tid, lp, top in rows:
        token, _ = _token_str(engine, tid, options)
        out["tokens"].append(token)
        out["token_logprobs"].append(lp)
        out["top_logprobs"].append(None if top is None else {_token_str(engine, i, options)[0]: l for i, l in top})
        out["text_offset"].append(offset)
        offset += len(engine.token_text(tid)[0])
    return out


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


class Builder:
    """Collects one request's events and writes its response body, or its stream's chunks."""

    def __init__(self, engine: Engine, request: ChatRequest | CompletionRequest, model: str,
                 parse_tool_calls: bool = True) -> None:
        self.engine, self.request, self.model = engine, request, model
        self.chat = isinstance(request, ChatRequest)
        self.id = f"{'chatcmpl' if self.chat else 'cmpl'}-{uuid.uuid4().hex}"
        self.created = int(time.time())
        n_prompts = 1 if self.chat else len(request.prompts)  # type: ignore[union-attr]
        self.choices = [ChoiceState(i) for i in range(n_prompts * request.n)]
        self.prompts: dict[int, Prompt] = {}
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.tools_on = (parse_tool_calls and self.chat and bool(request.tools)  # type: ignore[union-attr]
                         and request.tool_choice != "none")  # type: ignore[union-attr]

    # ---- events -------------------------------------------------------------------------------

    def prompt(self, event: Prompt, first_index: int) -> None:
        self.prompts[first_index] = event
        for c in self.choices[first_index: first_index + self.request.n]:
            c.prompt = event

    def token(self, event: Token) -> None:
        c = self.choices[event.index]
        if event.token_id is not None:
            c.ids.append(event.token_id)
            c.entries.append(event)
        c.text += event.text

    def finish(self, event: Finish) -> None:
        c = self.choices[event.index]
        c.text += event.text
        c.finish = event

    # ---- whole responses ----------------------------------------------------------------------

    def body(self) -> dict[str, Any]:
        choices = [self._chat_choice(c) if self.chat else self._completion_choice(c) for c in self.choices]
        out: dict[str, Any] = {"id": self.id, "object": "chat.completion" if self.chat else "text_completion",
                               "created": self.created, "model": self.model, "choices": choices,
                               "usage": usage(self.prompt_tokens, self.completion_tokens)}
        if self.chat and self.request.return_token_ids and 0 in self.prompts:
            out["prompt_token_ids"] = self.prompts[0].token_ids
        return out

    def _echo_text(self, c: ChoiceState) -> str:
        if not self.request.echo or self.chat:
            return ""
        raw = self.request.prompts[c.index // self.request.n]  # type: ignore[union-attr]
        return raw if isinstance(raw, str) else self.engine.decode(raw)

    def _chat_choice(self, c: ChoiceState) -> dict[str, Any]:
        f = c.finish or Finish(c.index, "stop")
        message: dict[str, Any] = {"role": "assistant", "content": c.text}
        reason = f.reason
        if self.tools_on:
            parsed = toolcalls.extract(c.text, self.request.tool_choice)  # type: ignore[union-attr]
            if parsed.calls:
                message = {"role": "assistant", "content": parsed.content, "tool_calls": parsed.calls}
                reason = toolcalls.finish_reason(f.reason, parsed.calls, self.request.tool_choice)  # type: ignore[union-attr]
        choice: dict[str, Any] = {"index": c.index, "message": message, "logprobs": None, "finish_reason": reason,
                                  "stop_reason": f.stop}
        if self.request.logprobs:
            choice["logprobs"] = {"content": chat_logprob_entries(self.engine, c.entries, self.request)}
        if self.request.return_token_ids:
            choice["token_ids"] = c.ids
        return choice

    def _completion_choice(self, c: ChoiceState) -> dict[str, Any]:
        f = c.finish or Finish(c.index, "stop")
        echo = self._echo_text(c)
        choice: dict[str, Any] = {"index": c.index, "text": echo + c.text, "logprobs": None,
                                  "finish_reason": f.reason, "stop_reason": f.stop}
        if self.request.logprobs:
            choice["logprobs"] = completion_logprobs(self.engine, c.entries, self.request, 0,
                                                     c.prompt if self.request.echo else None)
        if self.request.return_token_ids:
            choice["token_ids"] = c.ids
            choice["prompt_token_ids"] = c.prompt.token_ids if c.prompt else None
        return choice

    # ---- streams ------------------------------------------------------------------------------

    def _chunk(self, choices: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        out = {"id": self.id, "object": "chat.completion.chunk" if self.chat else "text_completion",
               "created": self.created, "model": self.model, "choices": choices, **extra}
        if self.request.include_usage:
            out.setdefault("usage", None)
        return out

    def stream_token(self, event: Token) -> list[dict[str, Any]]:
        """Chunks for one token event."""
        c = self.choices[event.index]
        self.token(event)
        text = event.text
        if self.tools_on:
            if c.splitter is None:
                c.splitter = toolcalls.StreamSplitter()
            text = c.splitter.feed(text)
        chunks = self._start(c)
        lp = None
        if self.request.logprobs and event.token_id is not None:
            lp = ({"content": chat_logprob_entries(self.engine, [event], self.request)} if self.chat else
                  completion_logprobs(self.engine, [event], self.request, 0))
        if not text and lp is None:
            return chunks
        if self.chat:
            choice = {"index": c.index, "delta": {"content": text}, "logprobs": lp, "finish_reason": None}
        else:
            choice = {"index": c.index, "text": text, "logprobs": lp, "finish_reason": None}
        if self.request.return_token_ids and event.token_id is not None:
            choice["token_ids"] = [event.token_id]
        return chunks + [self._chunk([choice])]

    def _start(self, c: ChoiceState) -> list[dict[str, Any]]:
        if c.started:
            return []
        c.started = True
        if self.chat:
            extra = {"prompt_token_ids": c.prompt.token_ids} if self.request.return_token_ids and c.prompt and c.index == 0 else {}
            return [self._chunk([{"index": c.index, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                                  "finish_reason": None}], **extra)]
        echo = self._echo_text(c)
        if not echo:
            return []
        lp = (completion_logprobs(self.engine, [], self.request, 0, c.prompt)
              if self.request.logprobs and c.prompt else None)
        choice = {"index": c.index, "text": echo, "logprobs": lp, "finish_reason": None}
        if self.request.return_token_ids and c.prompt:
            choice["prompt_token_ids"] = c.prompt.token_ids
        return [self._chunk([choice])]

    def stream_finish(self, event: Finish) -> list[dict[str, Any]]:
        c = self.choices[event.index]
        self.finish(event)
        chunks = self._start(c)
        text, calls, reason = event.text, [], event.reason
        if self.tools_on:
            if c.splitter is None:
                c.splitter = toolcalls.StreamSplitter()
            head = c.splitter.feed(text)
            rest, calls = c.splitter.finish(self.request.tool_choice)  # type: ignore[union-attr]
            text = head + rest
            reason = toolcalls.finish_reason(event.reason, calls, self.request.tool_choice)  # type: ignore[union-attr]
        if self.chat:
            if text:
                chunks.append(self._chunk([{"index": c.index, "delta": {"content": text}, "logprobs": None,
                                            "finish_reason": None}]))
            for k, call in enumerate(calls):
                chunks.append(self._chunk([{"index": c.index, "delta": {"tool_calls": [{"index": k, **call}]},
                                            "logprobs": None, "finish_reason": None}]))
            chunks.append(self._chunk([{"index": c.index, "delta": {}, "logprobs": None, "finish_reason": reason,
                                        "stop_reason": event.stop}]))
        else:
            chunks.append(self._chunk([{"index": c.index, "text": text, "logprobs": None, "finish_reason": reason,
                                        "stop_reason": event.stop}]))
        return chunks

    def stream_usage(self) -> list[dict[str, Any]]:
        if not self.request.include_usage:
            return []
        return [self._chunk([], usage=usage(self.prompt_tokens, self.completion_tokens))]
