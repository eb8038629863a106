"""Response bodies in OpenAI's format: completions, stream chunks, usage, and the ``mirror_ort`` field.

``mirror_ort`` carries what OpenAI's schema has no place for: the decoding method, tokens per
target call (``mean_accepted``), Mirror-SD's reuse (``reuse_rate``), the providers, the speed, how
long the request waited for the pipeline and how long it generated.
"""

import json
import time
import uuid

from .. import __version__

FINGERPRINT = f"mirror-ort-{__version__}"
EXTENSION_KEYS = ("method", "mean_accepted", "reuse_rate", "target_ep", "draft_ep", "tokens_per_s", "new_tokens",
                  "target_calls", "cached_prompt_tokens")


class Reply:
    """The fixed parts of one request's answer: id, creation time, model, and whether it is a chat."""

    def __init__(self, kind: str, model: str, prompt_tokens: int):
        self.kind, self.model, self.prompt_tokens = kind, model, prompt_tokens
        self.id = f"{'chatcmpl' if kind == 'chat' else 'cmpl'}-{uuid.uuid4().hex}"
        self.created = int(time.time())

    def _head(self, object: str) -> dict:
        return {"id": self.id, "object": object, "created": self.created, "model": self.model,
                "system_fingerprint": FINGERPRINT}

    def completion(self, text: str, finished) -> dict:
        """The whole answer of a request with ``stream`` false."""
        if self.kind == "chat":
            choice = {"index": 0, "message": {"role": "assistant", "content": text}}
        else:
            choice = {"index": 0, "text": text}
        choice.update(logprobs=None, finish_reason=finished.finish_reason)
        return {**self._head("chat.completion" if self.kind == "chat" else "text_completion"), "choices": [choice],
                "usage": self.usage(finished), "mirror_ort": extension(finished)}

    def chunk(self, text: str | None = None, finished=None, role: bool = False) -> dict:
        """One stream chunk: the assistant role (first), a text piece, or the finish reason (last)."""
        if self.kind == "chat":
            delta = {"role": "assistant", "content": ""} if role else ({"content": text} if text is not None else {})
            choice = {"index": 0, "delta": delta}
        else:
            choice = {"index": 0, "text": text or ""}
        choice.update(logprobs=None, finish_reason=finished.finish_reason if finished else None)
        body = {**self._head("chat.completion.chunk" if self.kind == "chat" else "text_completion"),
                "choices": [choice]}
        if finished is not None:
            body["mirror_ort"] = extension(finished)
        return body

    def usage_chunk(self, finished) -> dict:
        """The chunk ``stream_options.include_usage`` asks for: no choices, the usage."""
        return {**self._head("chat.completion.chunk" if self.kind == "chat" else "text_completion"), "choices": [],
                "usage": self.usage(finished)}

    def usage(self, finished) -> dict:
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": finished.completion_tokens,
                "total_tokens": self.prompt_tokens + finished.completion_tokens,
                "prompt_tokens_details": {"cached_tokens": finished.stats.get("cached_prompt_tokens", 0)}}


def extension(finished) -> dict:
    stats = finished.stats
    return {**{k: stats.get(k) for k in EXTENSION_KEYS}, "queue_seconds": round(finished.queue_seconds, 6),
            "generation_seconds": round(stats.get("seconds", {}).get("total", 0.0), 6)}


def sse(data) -> str:
    """One server-sent event: a JSON body, or the literal ``[DONE]`` that ends a stream."""
    return f"data: {data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)}\n\n"
