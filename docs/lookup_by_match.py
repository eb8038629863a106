"""How deep a prompt-lookup guess is right, by the length of the n-gram that matched.

Replays lookup on the target's own greedy answers (what greedy verification accepts): at every
answer position, the guess for what follows and how many of its tokens the target then wrote.

    python docs/lookup_by_match.py bundles/smollm2 question.jsonl --categories summarization,rag --per-category 10
"""

import argparse
import collections
import json

from mirror_ort import Pipeline
from mirror_ort.runtime.lookup import PromptLookup


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bundle")
    parser.add_argument("questions")
    parser.add_argument("--categories", default="summarization,rag")
    parser.add_argument("--per-category", type=int, default=10)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--window", type=int, default=8)
    args = parser.parse_args()
    rows = [json.loads(line) for line in open(args.questions) if line.strip()]
    pipe, lookup = Pipeline.from_bundle(args.bundle), PromptLookup()
    counts = collections.defaultdict(lambda: [0, 0, 0])  # n -> guesses, first token right, tokens right
    for category in args.categories.split(","):
        for row in [r for r in rows if r["category"] == category][:args.per_category]:
            prompt = pipe.encode(row["turns"][0], chat=True)
            answer = pipe.generate(prompt, method="ar", max_new_tokens=args.max_new_tokens).token_ids
            for t in range(len(answer)):
                guess, n = lookup.propose(prompt + answer[:t], args.window)
                if not guess:
                    continue
                right = next((i for i, (g, a) in enumerate(zip(guess, answer[t:])) if g != a), min(len(guess), len(answer) - t))
                c = counts[n]
                c[0], c[1], c[2] = c[0] + 1, c[1] + (right > 0), c[2] + right
    print("| n-gram | guesses | first token right | tokens right per guess |")
    print("|---|---|---|---|")
    for n, (guesses, first, tokens) in sorted(counts.items()):
        print(f"| {n} | {guesses} | {first / guesses:.0%} | {tokens / guesses:.2f} |")


if __name__ == "__main__":
    main()
