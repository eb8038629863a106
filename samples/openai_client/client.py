#!/usr/bin/env python3
"""Chat with a `mirror-ort serve` server through the official `openai` package, streaming the reply.

    mirror-ort serve bundles/smollm2                  # in one terminal
    python client.py "What is speculative decoding?"  # in another

Only `openai` is needed here. After the reply it prints the usage and the server's `mirror_ort`
field: the decoding method, tokens per target call, Mirror-SD's reuse and the providers.
"""

import argparse
import os
import sys

from openai import OpenAI, OpenAIError


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Stream a chat reply from a mirror-ort server.")
    p.add_argument("prompt", nargs="?", default="What is speculative decoding?", help="The user message.")
    p.add_argument("--base-url", default="http://127.0.0.1:8000/v1", help="The server's /v1 address.")
    p.add_argument("--api-key", default=os.environ.get("MIRROR_ORT_API_KEY", "none"),
                   help="The server's --api-key (default: $MIRROR_ORT_API_KEY; any text when it has none).")
    p.add_argument("--system", help="A system message before the prompt.")
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--method", choices=("mirror", "sd", "ar"), help="Decoding method (default: the server's).")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    client = OpenAI(base_url=args.base_url, api_key=args.api_key, max_retries=0)
    messages = ([{"role": "system", "content": args.system}] if args.system else []) + \
        [{"role": "user", "content": args.prompt}]
    try:
        model = client.models.list().data[0].id
        stream = client.chat.completions.create(
            model=model, messages=messages, max_tokens=args.max_tokens, stream=True,
            stream_options={"include_usage": True}, extra_body={"method": args.method} if args.method else None)
        usage, stats = None, {}
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                print(chunk.choices[0].delta.content, end="", flush=True)
            stats = (chunk.model_extra or {}).get("mirror_ort") or stats
            usage = chunk.usage or usage
    except OpenAIError as e:
        print(f"\nclient: error: {e}", file=sys.stderr)
        return 1
    print()
    print(f"[{model}: {usage.prompt_tokens} prompt + {usage.completion_tokens} completion tokens; {stats['method']}, "
          f"{stats['tokens_per_s']:.1f} tok/s, {stats['mean_accepted']:.2f} tokens per target call, "
          f"reuse {stats['reuse_rate']:.0%}, target {stats['target_ep']}, draft {stats['draft_ep']}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
