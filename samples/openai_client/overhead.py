#!/usr/bin/env python3
"""What a request through `mirror-ort serve` costs beyond `Pipeline.generate` on the same prompts.

    mirror-ort serve bundles/smollm2 &
    python overhead.py bundles/smollm2 --max-tokens 64

Each prompt runs twice, one after the other: `Pipeline.generate` in this process, then the same
greedy chat request through the server (stream off). Both answers must be equal. Printed per
prompt and as medians: the two wall times and their difference, and each side's time outside
the decoding loop (wall time minus the generation time in the stats, which the server returns
as `mirror_ort.generation_seconds`). The difference of those two is what the server adds per
request, and unlike the wall times it is not swayed by the two runs' different speeds. Needs
`mirror-ort` and `openai`.
"""

import argparse
import os
import statistics
import sys
import time

from load_test import PROMPTS
from openai import OpenAI

from mirror_ort import Pipeline


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
    client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Hello"}], max_tokens=1)
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
        local_outside = local_s - local.stats["seconds"]["total"]
        served_outside = served_s - reply.model_extra["mirror_ort"]["generation_seconds"]
        rows.append((local_s, served_s, local_outside, served_outside, same))
        print(f"{len(local.token_ids):4d} tokens  wall: generate {local_s * 1e3:8.1f} ms, server {served_s * 1e3:8.1f} ms "
              f"({(served_s - local_s) * 1e3:+7.1f})  outside decoding: generate {local_outside * 1e3:5.1f} ms, server "
              f"{served_outside * 1e3:5.1f} ms ({(served_outside - local_outside) * 1e3:+5.1f})  "
              f"{'equal' if same else 'DIFFERENT'}")

    def median_ms(column):
        return statistics.median(r[column] for r in rows) * 1e3

    added = statistics.median(r[3] - r[2] for r in rows) * 1e3
    print(f"{len(rows)} prompts, {args.method}, max_tokens {args.max_tokens}, medians: wall generate "
          f"{median_ms(0):.1f} ms, server {median_ms(1):.1f} ms; outside decoding generate {median_ms(2):.1f} ms, "
          f"server {median_ms(3):.1f} ms; the server adds {added:.1f} ms per request; "
          f"{sum(r[4] for r in rows)}/{len(rows)} answers equal")
    return 0 if all(r[4] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
