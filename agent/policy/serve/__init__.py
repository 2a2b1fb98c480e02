"""`evolve serve`: an OpenAI-compatible HTTP server for Evolve policies (loopback only, stdlib HTTP).

Endpoints:
- `GET /v1/models` (and `/v1/models/ID`): the base policy and the stored versions (`version:ID`), each with
  `max_model_len` once loaded.
- `POST /v1/chat/completions`: messages, tools + tool_choice (none / auto / required / a named function;
  calls parsed into `message.tool_calls` by the agent's parser), n, stream (+ `stream_options.include_usage`),
  max_tokens / max_completion_tokens, temperature, top_p, stop, seed, logprobs + top_logprobs.
- `POST /v1/completions`: prompt as text, token ids or a list of either; echo, logprobs (an integer:
  alternatives per token), n, stream, the same sampling fields.
- `POST /tokenize`: `{"messages": [...]}` or `{"prompt": "..."}` -> `{"count", "max_model_len"[, "tokens"]}`.

Extensions named as vLLM names them: `return_token_ids`, `return_tokens_as_token_ids`,
`include_stop_str_in_output`, `ignore_eos`, `stop_reason`; chat log-prob entries also carry `token_id`.
Caps: n <= 16, top_logprobs <= 20 (`schema`), max_tokens <= `--max-tokens-cap`.

Engines (`engine`): llama.cpp and transformers policies run under continuous batching with real token
streaming, cancellation when the client leaves, n > 1 from one prompt evaluation, top log-probs and
prompt log-probs; any other policy is served whole-completion through `Policy.generate` (`policy_engine`).
Limits against hostile clients: `http`.
"""

from agent.policy.serve.app import (DEFAULT_MAX_TOKENS, MAX_BODY_BYTES, MAX_CONNECTIONS, MAX_TOKENS_CAP,
                                    REQUEST_TIMEOUT_S, PolicyServer, check_port, serve, serve_in_thread)
from agent.policy.serve.models import ModelSource

__all__ = ["DEFAULT_MAX_TOKENS", "MAX_BODY_BYTES", "MAX_CONNECTIONS", "MAX_TOKENS_CAP", "REQUEST_TIMEOUT_S",
           "ModelSource", "PolicyServer", "check_port", "serve", "serve_in_thread"]
