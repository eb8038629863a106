#!/usr/bin/env python3
"""Interactive chat on a mirror-ort bundle, the draft on the best NPU this machine has.

    python chat.py BUNDLE                      # draft: qnn, then openvino:NPU, then dml, then cpu
    python chat.py BUNDLE --draft-ep cpu       # exactly this draft provider
    python chat.py BUNDLE --draft-ep qnn,cpu   # this order, falling back left to right

The target stays on ``--target-ep`` (cpu by default). Every turn streams the reply, then prints
its speed, the tokens committed per target call and the providers that served it. The conversation
is kept as a list of messages rendered with the bundle's chat template; when it no longer fits the
cache capacity the oldest turns are dropped, with a note saying so. ``/reset`` clears it, ``/exit``
or end of input quits.

Only the public API is used: ``mirror_ort.Pipeline``, ``mirror_ort.MirrorError``,
``mirror_ort.providers.describe_providers`` and ``parse_provider``.
"""

import argparse
import sys
from pathlib import Path

from mirror_ort import MirrorError, Pipeline
from mirror_ort.providers import describe_providers, parse_provider

# Best first: Qualcomm Hexagon NPU, Intel NPU, DirectML (Windows GPUs/NPUs), then the CPU.
DEFAULT_DRAFT_EPS = ("qnn", "openvino:NPU", "dml", "cpu")


def say(text: str = "") -> None:
    print(text, flush=True)


def fail(text: str) -> None:
    print(f"chat: error: {text}", file=sys.stderr, flush=True)
    sys.exit(2)


def one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}" if not isinstance(error, MirrorError) else text


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description="Chat with a mirror-ort bundle; the draft runs on an NPU when one is available.")
    p.add_argument("bundle", help="Bundle directory written by `mirror-ort export`.")
    p.add_argument("--draft-ep", help="Draft provider(s), comma-separated in the order to try, e.g. qnn or "
                                      f"qnn,cpu (default: {','.join(DEFAULT_DRAFT_EPS)}).")
    p.add_argument("--target-ep", default="cpu", help="Target provider (default: cpu).")
    p.add_argument("--method", choices=("mirror", "sd", "ar"), default="mirror")
    p.add_argument("--max-new-tokens", type=int, default=256, help="Longest reply in tokens (default: 256).")
    p.add_argument("--max-length", type=int, help="Cache capacity in tokens (default: the model's, at most 2048).")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default).")
    p.add_argument("--system", help="A system message that starts (and stays in) the conversation.")
    return p.parse_args(argv)


def candidate_status(name: str, described: dict) -> str | None:
    """Why ``name`` cannot work here (not installed, broken plugin, no device), or None to try it."""
    entry = next((e for e in described["providers"] if e["name"] == name), None)
    if entry is None:
        return None
    if not entry["installed"]:
        return f"not installed ({entry['install_hint']})"
    library = entry["library"]
    if library and not library["loaded"]:
        return f"its plugin library does not load ({library['message']})"
    if not entry["devices"]:
        return "installed, but it offers no device on this machine"
    return None


def open_pipeline(args):
    """Load the bundle with the draft on the first provider that starts; say why each other one did not."""
    path = Path(args.bundle)
    if not path.exists():
        fail(f"no bundle at {path}: create one with `mirror-ort export -o {path}`")
    # The target alone first: a bad bundle or target provider is reported once, not blamed on each draft provider.
    try:
        probe = Pipeline.from_bundle(path, target_ep=args.target_ep, max_length=args.max_length, load_draft=False)
    except MirrorError as e:
        fail(str(e))
    try:
        probe.encode(messages=[{"role": "user", "content": "hi"}])
    except (ValueError, MirrorError) as e:
        fail(f"{path} has no chat template, which this chat needs ({one_line(e)}): "
             "use `mirror-ort run` without --chat, or export an instruct model")
    if args.method == "ar":
        return probe, "ar"
    if not probe.bundle.has_draft:
        say(f"note: {path} has no draft graph: decoding without speculation (--method ar)")
        return probe, "ar"
    del probe

    explicit = args.draft_ep is not None
    candidates = [c.strip() for c in (args.draft_ep or ",".join(DEFAULT_DRAFT_EPS)).split(",") if c.strip()]
    try:
        described = describe_providers()
    except Exception as e:  # listing is best effort: every candidate is still tried
        say(f"note: cannot list the execution providers ({one_line(e)}): trying each one")
        described = {"providers": []}
    errors = []
    for i, text in enumerate(candidates):
        last = i == len(candidates) - 1
        then = "" if last else f": trying {candidates[i + 1]}"
        try:
            choice = parse_provider(text)
        except MirrorError as e:
            fail(str(e))
        reason = candidate_status(choice.name, described)
        if reason is not None:
            errors.append(f"{text}: {reason}")
            say(f"draft provider {text} skipped: {reason}{then}")
            continue
        try:
            return Pipeline.from_bundle(path, target_ep=args.target_ep, draft_ep=choice, max_length=args.max_length), \
                args.method
        except Exception as e:  # ONNX Runtime raises plain Exceptions; each one is shown, never swallowed
            errors.append(f"{text}: {one_line(e)}")
            say(f"draft provider {text} failed to start: {one_line(e)}{then}")
    hint = "" if not explicit else "; pass another --draft-ep (e.g. cpu) or leave it out to try every provider"
    fail(f"no draft provider could start ({' | '.join(errors)}){hint}")


def fit(pipe, messages: list[dict], reserve: int, capacity: int) -> tuple[int | None, int]:
    """Drop the oldest turns until the prompt leaves ``reserve`` of ``capacity`` tokens for the reply.

    Returns (prompt tokens, turns dropped); prompt tokens is None when even the newest message
    alone does not fit. A system message is never dropped.
    """
    dropped = 0
    while True:
        n = len(pipe.encode(messages=messages))
        if n + reserve <= capacity:
            return n, dropped
        first = next(i for i, m in enumerate(messages) if m["role"] != "system")
        if first == len(messages) - 1:  # only the new user message is left
            return None, dropped
        end = first + 1
        while end < len(messages) - 1 and messages[end]["role"] != "user":  # the turn's replies go with it
            end += 1
        del messages[first:end]
        dropped += 1


def has_older_turns(messages: list[dict]) -> bool:
    return sum(m["role"] == "user" for m in messages) > 1


def reply(pipe, method: str, messages: list[dict], capacity: int, args) -> int:
    """Answer the last user message, streaming; returns the capacity, lowered if the pipeline refused."""
    while True:
        # Leave room for a reply: the full --max-new-tokens when it fits, else half the capacity.
        reserve = min(args.max_new_tokens, capacity // 2)
        before = sum(m["role"] == "user" for m in messages)
        prompt_tokens, dropped = fit(pipe, messages, reserve, capacity)
        if dropped:
            what = "the oldest turn" if dropped == 1 else f"the {dropped} oldest turns"
            say(f"(conversation too long for the {capacity}-token capacity: dropped {what}, {before - dropped} kept)")
        if prompt_tokens is None:
            messages.pop()
            say(f"(this message alone does not fit the {capacity}-token capacity with room for a reply: "
                "shorten it, lower --max-new-tokens or raise --max-length)")
            return capacity

        pieces = []
        try:
            for piece in pipe.stream(messages=messages, method=method, max_new_tokens=args.max_new_tokens,
                                     temperature=args.temperature):
                print(("" if pieces else "assistant> ") + piece, end="", flush=True)
                pieces.append(piece)
        except MirrorError as e:
            if pieces or not has_older_turns(messages):
                messages.pop()
                say(("\n" if pieces else "") + f"(error: {e})")
                return capacity
            # Refused before the first token: the pipeline holds less than pipe.max_length for this
            # method (a static-shape NPU draft has a fixed cache). Shorten the conversation and retry.
            say(f"(the pipeline refused the {prompt_tokens}-token conversation: {e})")
            capacity = prompt_tokens
            continue
        say("" if pieces else "assistant> ")
        messages.append({"role": "assistant", "content": "".join(pieces)})
        s = pipe.last_stats
        say(f"[{s['new_tokens']} tokens in {s['seconds']['total']:.2f} s: {s['tokens_per_s']:.1f} tok/s, "
            f"{s['mean_accepted']:.2f} tokens per target call, prompt {prompt_tokens} tokens, "
            f"target {s['target_ep']}, draft {s['draft_ep'] or 'none'}]")
        if s.get("draft_error"):
            say(f"(the draft failed during this turn and the target finished it alone: {s['draft_error']})")
        return capacity


def chat(pipe, method: str, args) -> None:
    history = [{"role": "system", "content": args.system}] if args.system else []
    messages = list(history)
    capacity = pipe.max_length  # lowered if the pipeline refuses a conversation that fits it
    interactive = sys.stdin.isatty()
    say("Type a message; /reset starts over, /exit quits.")
    while True:
        try:
            line = input("\nyou> ")
        except EOFError:
            say()
            break
        text = line.strip()
        if not interactive:
            say(text)  # echo scripted input so the transcript reads like a conversation
        if not text:
            continue
        if text in ("/exit", "/quit"):
            break
        if text == "/reset":
            messages = list(history)
            say("(conversation cleared)")
            continue
        messages.append({"role": "user", "content": text})
        capacity = reply(pipe, method, messages, capacity, args)


def main(argv=None) -> None:
    args = parse_args(argv)
    if hasattr(sys.stdout, "reconfigure"):  # a model may emit characters the console cannot show
        sys.stdout.reconfigure(errors="replace")
    pipe, method = open_pipeline(args)
    draft = getattr(pipe.draft, "provider", None) if method != "ar" else None
    say(f"bundle {args.bundle}: capacity {pipe.max_length} tokens, method {method}")
    say(f"providers: target {pipe.prefix.provider}, draft {draft or 'none'}")
    try:
        chat(pipe, method, args)
    except KeyboardInterrupt:
        say()
    say("bye")


if __name__ == "__main__":
    main()
