#!/usr/bin/env python3
"""What a request through `mirror-ort serve` costs beyond `Pipeline.generate` on the same prompts.

    mirror-ort serve bundles/smollm2 &
    python overhead.py bundles/smollm2 --max-tokens 64

Each prompt runs twice, one after the other: `Pipeline.generate` in this process, then the same
greedy chat request through the server (stream off). Both answers must be equal. Printed per
prompt and as medians: the two wall times, their difference, and the server's own overhead
(latency minus the generation time it reports in `mirror_ort.generation_seconds`), which is not
swayed by the two runs' different speeds. Needs `mirror-ort` and `openai`.
"""

import argparse
import os
import statistics
import sys
import time

from openai import OpenAI

from mirror_ort import Pipeline
from load_test import PROMPTS


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Server overhead per request vs Pipeline.generate.")
    p.add_argument("bundle", help="The bundle the server serves.")
    p.add_argument("--base-url", default="http://127.0.0.1:8000/v1")
    p.add_argument("--api-key", default=os.environ.get("MIRROR_ORT_API_KEY", "none"))
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--method", choices=("mirror", "sd", "ar"), default="mirror", help="Must be the same on both.")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    client = OpenAI(base_url=args.base_url, api_key=args.api_key, max_retries=0, timeout=600)
    model = client.models.list().data[0].id
    pipe = Pipeline.from_bundle(args.bundle)
    pipe.generate("Hello", method=args.method, max_new_tokens=1)  # as the server does at start
    rows = []
    for prompt in PROMPTS:
        messages = [{"role": "user", "content": prompt}]
        t = time.perf_counter()
        local = pipe.generate(messages=messages, method=args.method, max_new_tokens=args.max_tokens)
        local_s = time.perf_counter() - t
        t = time.perf_counter()
        reply = client.chat.completions.create(model=model, messages=messages, max_tokens=args.max_tokens,
                                               temperature=0, extra_body={"method": args.method})
        served_s = time.perf_counter() - t
        same = reply.choices[0].message.content == local.text and reply.usage.completion_tokens == len(local.token_ids)
        rows.append((local_s, served_s, served_s - reply.model_extra["mirror_ort"]["generation_seconds"], same,
                     len(local.token_ids)))
        print(f"{len(local.token_ids):4d} tokens  generate {local_s * 1e3:8.1f} ms  server {served_s * 1e3:8.1f} ms  "
              f"difference {(served_s - local_s) * 1e3:+7.1f} ms  server overhead {rows[-1][2] * 1e3:6.1f} ms  "
              f"{'equal' if same else 'DIFFERENT'}")
    diff = statistics.median(r[1] - r[0] for r in rows)
    overhead = statistics.median(r[2] for r in rows)
    print(f"{len(rows)} prompts, {args.method}, max_tokens {args.max_tokens}: median generate "
          f"{statistics.median(r[0] for r in rows) * 1e3:.1f} ms, server {statistics.median(r[1] for r in rows) * 1e3:.1f} ms, "
          f"difference {diff * 1e3:+.1f} ms; server overhead (latency - generation) median {overhead * 1e3:.1f} ms, "
          f"max {max(r[2] for r in rows) * 1e3:.1f} ms; {sum(r[3] for r in rows)}/{len(rows)} answers equal")
    return 0 if all(r[3] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
