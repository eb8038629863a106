#!/usr/bin/env python3
"""Load a `mirror-ort serve` server with concurrent clients and check that nothing is lost.

    python load_test.py --requests 32 --concurrency 8 --max-tokens 64

First every prompt is asked once, alone (greedy): the reference answers. Then ``--requests``
requests (streaming and not, alternately) run from ``--concurrency`` threads; each answer must
equal its prompt's reference, text and token count, or be a 429 (the server's queue was full).
Prints requests, concurrency, p50/p95 latency, tokens/s, 429s, errors and mismatches; exits 1
if any answer was lost, wrong or an error.
"""

import argparse
import json
import os
import statistics
import sys
import threading
import time

from openai import OpenAI, OpenAIError, RateLimitError

PROMPTS = [
    "What is speculative decoding?",
    "Write a haiku about the sea.",
    "Explain what a hash map is in two sentences.",
    "Give three tips for a job interview.",
    "Why is the sky blue?",
    "Translate to French: the weather is nice today.",
    "What is the capital of Italy, and what is it known for?",
    "Write a Python function that reverses a string.",
]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Concurrent clients against a mirror-ort server.")
    p.add_argument("--base-url", default="http://127.0.0.1:8000/v1")
    p.add_argument("--api-key", default=os.environ.get("MIRROR_ORT_API_KEY", "none"))
    p.add_argument("--requests", type=int, default=32)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--method", choices=("mirror", "sd", "ar"), help="Decoding method (default: the server's).")
    p.add_argument("--json", dest="json_path", help="Also write the figures to this JSON file.")
    return p.parse_args(argv)


def ask(client, model, prompt, args, stream):
    """(text, completion tokens) of one greedy chat request."""
    options = dict(model=model, messages=[{"role": "user", "content": prompt}], max_tokens=args.max_tokens,
                   temperature=0, extra_body={"method": args.method} if args.method else None)
    if not stream:
        reply = client.chat.completions.create(**options)
        return reply.choices[0].message.content, reply.usage.completion_tokens
    pieces, usage = [], None
    for chunk in client.chat.completions.create(**options, stream=True, stream_options={"include_usage": True}):
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
        usage = chunk.usage or usage
    return "".join(pieces), usage.completion_tokens


def main(argv=None) -> int:
    args = parse_args(argv)
    client = OpenAI(base_url=args.base_url, api_key=args.api_key, max_retries=0, timeout=600)
    model = client.models.list().data[0].id
    reference = {p: ask(client, model, p, args, stream=False) for p in PROMPTS}

    results = [None] * args.requests  # (outcome, seconds, tokens)
    lock = threading.Lock()
    jobs = iter(range(args.requests))

    def worker():
        while True:
            with lock:
                i = next(jobs, None)
            if i is None:
                return
            prompt, t = PROMPTS[i % len(PROMPTS)], time.perf_counter()
            try:
                text, tokens = ask(client, model, prompt, args, stream=i % 2 == 1)
                outcome = "ok" if (text, tokens) == reference[prompt] else "mismatch"
            except RateLimitError:
                outcome, tokens = "429", 0
            except OpenAIError as e:
                outcome, tokens = f"error: {e}", 0
            results[i] = (outcome, time.perf_counter() - t, tokens)

    start = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(args.concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start

    ok = [r for r in results if r[0] == "ok"]
    latencies = sorted(r[1] for r in ok)
    figures = {
        "requests": args.requests, "concurrency": args.concurrency, "max_tokens": args.max_tokens,
        "completed": len(ok), "rejected_429": sum(r[0] == "429" for r in results),
        "errors": sum(r[0].startswith("error") for r in results),
        "lost_or_wrong": sum(r[0] == "mismatch" for r in results) + results.count(None),
        "p50_latency_s": statistics.median(latencies) if latencies else None,
        "p95_latency_s": latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))] if latencies else None,
        "completion_tokens": sum(r[2] for r in ok), "wall_s": wall,
        "tokens_per_s": sum(r[2] for r in ok) / wall,
    }
    for r in results:
        if r and r[0].startswith("error"):
            print(r[0], file=sys.stderr)
    p50, p95 = figures["p50_latency_s"], figures["p95_latency_s"]
    print(f"{figures['requests']} requests, concurrency {figures['concurrency']}, max_tokens {args.max_tokens}: "
          f"{figures['completed']} completed, {figures['rejected_429']} got 429, {figures['errors']} errors, "
          f"{figures['lost_or_wrong']} lost or wrong")
    if latencies:
        print(f"latency p50 {p50:.3f} s, p95 {p95:.3f} s; {figures['completion_tokens']} tokens in {wall:.2f} s = "
              f"{figures['tokens_per_s']:.1f} tok/s")
    if args.json_path:
        with open(args.json_path, "w") as f:
            json.dump(figures, f, indent=2)
    return 0 if figures["lost_or_wrong"] == 0 and figures["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
