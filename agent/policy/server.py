"""The OpenAI-compatible server around a Policy: see `agent.policy.serve` (this module keeps the old import
path and the `python -m agent.policy.server` entry point)."""

from __future__ import annotations

import argparse
import logging
import sys

from agent.policy import DEFAULT_POLICY, load_policy
from agent.policy.base import PolicyError
from agent.policy.serve import (MAX_BODY_BYTES, MAX_TOKENS_CAP, REQUEST_TIMEOUT_S, PolicyServer, check_port, serve,
                                serve_in_thread)

__all__ = ["MAX_BODY_BYTES", "MAX_TOKENS_CAP", "REQUEST_TIMEOUT_S", "PolicyServer", "check_port", "serve",
           "serve_in_thread", "main"]


def main() -> None:
    """`python -m agent.policy.server --policy SPEC --port 8000`: serve a policy until Ctrl-C."""
    parser = argparse.ArgumentParser(description="OpenAI-compatible server around an Evolve policy (loopback only)")
    parser.add_argument("--policy", default=DEFAULT_POLICY, help="policy spec (default: %(default)s)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--max-tokens-cap", type=int, default=MAX_TOKENS_CAP,
                        help="largest max_tokens a request may ask for (default: %(default)s)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        check_port(args.host, args.port)  # before a model loads for minutes
        policy = load_policy(args.policy)
        serve(policy, args.host, args.port, max_tokens_cap=args.max_tokens_cap)
    except PolicyError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
