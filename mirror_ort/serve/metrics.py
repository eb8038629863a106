"""Server counters, rendered in Prometheus' text exposition format for ``GET /metrics``.

Generations report from the pipeline's thread, requests from the event loop: one lock guards both.
"""

import threading
from collections import Counter


class Metrics:
    def __init__(self):
        self._lock = threading.Lock()
        self.requests = Counter()        # (endpoint, outcome) -> count
        self.request_seconds = 0.0       # wall time of completed requests, arrival to last byte
        self.completed = 0
        self.generations = 0
        self.prompt_tokens = 0
        self.cached_prompt_tokens = 0
        self.completion_tokens = 0
        self.generation_seconds = 0.0
        self.target_calls = 0
        self.reused_windows = 0
        self.fallback_windows = 0

    def request(self, endpoint: str, outcome: str, seconds: float) -> None:
        with self._lock:
            self.requests[endpoint, outcome] += 1
            if outcome == "completed":
                self.completed += 1
                self.request_seconds += seconds

    def generation(self, stats: dict) -> None:
        """One generation's pipeline stats, whether it ran to the end or was cancelled."""
        with self._lock:
            self.generations += 1
            self.prompt_tokens += stats["prompt_tokens"]
            self.cached_prompt_tokens += stats["cached_prompt_tokens"]
            self.completion_tokens += stats["new_tokens"]
            self.generation_seconds += stats["seconds"]["total"]
            self.target_calls += stats["target_calls"]
            self.reused_windows += stats["reused_windows"]
            self.fallback_windows += stats["fallback_windows"]

    def render(self, model: str, running: int, queued: int, queue_size: int) -> str:
        model = _label(model)
        with self._lock:
            windows = self.reused_windows + self.fallback_windows
            rows = [
                ("requests_total", "counter", "Requests by endpoint and outcome.",
                 [({"endpoint": e, "outcome": o}, n) for (e, o), n in sorted(self.requests.items())]),
                ("request_seconds", "summary", "Wall time of completed requests, arrival to last byte.",
                 [({}, None)]),
                ("generations_total", "counter", "Generations run on the pipeline (cancelled ones included).",
                 [({}, self.generations)]),
                ("prompt_tokens_total", "counter", "Prompt tokens of all generations.", [({}, self.prompt_tokens)]),
                ("cached_prompt_tokens_total", "counter", "Prompt tokens whose K/V came from the previous generation.",
                 [({}, self.cached_prompt_tokens)]),
                ("completion_tokens_total", "counter", "Tokens generated.", [({}, self.completion_tokens)]),
                ("generation_seconds_total", "counter", "Time the pipeline spent generating.",
                 [({}, self.generation_seconds)]),
                ("tokens_per_second", "gauge", "Generated tokens per second of generation, over all generations.",
                 [({}, self.completion_tokens / self.generation_seconds if self.generation_seconds else 0.0)]),
                ("target_calls_total", "counter", "Target verification calls.", [({}, self.target_calls)]),
                ("tokens_per_target_call", "gauge", "Generated tokens per target call (mean_accepted), over all.",
                 [({}, self.completion_tokens / self.target_calls if self.target_calls else 0.0)]),
                ("reuse_rate", "gauge", "Share of Mirror-SD windows found in the draft tree (reuse_rate), over all.",
                 [({}, self.reused_windows / windows if windows else 0.0)]),
                ("running", "gauge", "Generations running now (at most one).", [({}, running)]),
                ("queue_depth", "gauge", "Requests waiting for the pipeline.", [({}, queued)]),
                ("queue_size", "gauge", "Requests that may wait before the server answers 429.", [({}, queue_size)]),
            ]
            lines = []
            for name, kind, help, samples in rows:
                full = f"mirror_ort_{name}"
                lines += [f"# HELP {full} {help}", f"# TYPE {full} {kind}"]
                if kind == "summary":
                    lines += [f'{full}_sum{{model="{model}"}} {self.request_seconds:.6f}',
                              f'{full}_count{{model="{model}"}} {self.completed}']
                    continue
                for labels, value in samples:
                    text = ",".join(f'{k}="{v}"' for k, v in {"model": model, **labels}.items())
                    lines.append(f"{full}{{{text}}} {_number(value)}")
            return "\n".join(lines) + "\n"


def _number(value) -> str:
    return str(value) if isinstance(value, int) else f"{value:.6g}"


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
