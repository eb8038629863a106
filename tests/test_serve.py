"""`mirror-ort serve`: a real server on 127.0.0.1 over a tiny bundle, talked to with the `openai` client.

Answers are compared with `Pipeline.generate` on the same input in this process. Every server is a
subprocess that its fixture or test stops; every loop is bounded.
"""

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest

from mirror_ort import Pipeline

SAMPLE = Path(__file__).resolve().parent.parent / "samples" / "openai_client"
READY = re.compile(r"serving '(?P<model>[^']+)' at (?P<url>http://127\.0\.0\.1:\d+)/v1")
LONG_PROMPT = "The capital of France is"  # the tiny model's greedy answer runs to max_tokens (checked)
LONG_TOKENS = 480


class Server:
    """`mirror-ort serve BUNDLE --port 0 ...` as a subprocess; its log is collected while it runs."""

    def __init__(self, bundle, *args, env=None):
        command = [sys.executable, "-m", "mirror_ort.cli", "serve", str(bundle), "--port", "0",
                   "--target-threads", "1", "--draft-threads", "1", *args]
        self.process = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                                        encoding="utf-8", env={**os.environ, **(env or {})})
        self.lines: list[str] = []
        self._ready = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if not self._ready.wait(120):
            self.stop()
            raise AssertionError("the server did not start:\n" + self.log)
        found = READY.search(self.log)
        self.url, self.model = found["url"], found["model"]

    def _read(self):
        for line in self.process.stderr:  # ends when the process closes stderr
            self.lines.append(line)
            if READY.search(line):
                self._ready.set()
        self._ready.set()

    @property
    def log(self) -> str:
        return "".join(self.lines)

    def client(self, api_key="none") -> openai.OpenAI:
        return openai.OpenAI(base_url=self.url + "/v1", api_key=api_key, max_retries=0, timeout=120)

    def http(self, **kw) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=120, **kw)

    def stop(self, sig=signal.SIGTERM, timeout=60) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self._reader.join(10)
        return self.process.returncode


@pytest.fixture(scope="module")
def pipe(bundle_layers):
    return Pipeline.from_bundle(bundle_layers, target_threads=1, draft_threads=1)


@pytest.fixture(scope="module")
def server(bundle_layers):
    """The server most tests share: default options, a queue of 4."""
    s = Server(bundle_layers, "--max-new-tokens", "24", "--queue-size", "4")
    yield s
    s.stop()


def chat(content):
    return [{"role": "user", "content": content}]


def expected(pipe, messages=None, prompt=None, **kw):
    return pipe.generate(prompt, messages=messages, **{"max_new_tokens": 24, "method": "mirror", **kw})


def stream_text(chunks):
    """Text, usage, finish reason and mirror_ort field of a streamed chat."""
    pieces, usage, finish, extension = [], None, None, None
    for chunk in chunks:
        if chunk.choices:
            pieces.append(chunk.choices[0].delta.content or "")
            finish = chunk.choices[0].finish_reason or finish
        usage = chunk.usage or usage
        extension = (chunk.model_extra or {}).get("mirror_ort") or extension
    return "".join(pieces), usage, finish, extension


def metric(text: str, name: str, **labels) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(f"mirror_ort_{name}{{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


@pytest.mark.parametrize("method", ["mirror", "ar"])
@pytest.mark.parametrize("stream", [False, True])
def test_chat_equals_pipeline_generate(server, pipe, stream, method):
    messages = chat(f"Tell me about Paris ({method})")
    want = expected(pipe, messages, method=method)
    create = dict(model=server.model, messages=messages, max_tokens=24, extra_body={"method": method})
    if stream:
        chunks = server.client().chat.completions.create(**create, stream=True, stream_options={"include_usage": True})
        text, usage, finish, extension = stream_text(chunks)
    else:
        reply = server.client().chat.completions.create(**create)
        text, usage, finish = reply.choices[0].message.content, reply.usage, reply.choices[0].finish_reason
        extension = reply.model_extra["mirror_ort"]
        assert reply.object == "chat.completion" and reply.choices[0].message.role == "assistant"
    assert text == want.text
    assert usage.completion_tokens == len(want.token_ids) == want.stats["new_tokens"]
    assert usage.prompt_tokens == len(pipe.encode(messages=messages))
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert finish == ("stop" if want.token_ids[-1] in pipe.tokenizer.eos_token_ids else "length")
    assert extension["method"] == method and extension["target_ep"] == "CPUExecutionProvider"
    assert extension["draft_ep"] == ("CPUExecutionProvider" if method != "ar" else None)
    assert extension["mean_accepted"] >= 1.0 and (method != "ar" or extension["mean_accepted"] == 1.0)
    assert 0.0 <= extension["reuse_rate"] <= 1.0


@pytest.mark.parametrize("stream", [False, True])
def test_text_completion_with_stop(server, pipe, stream):
    full = expected(pipe, prompt="def fibonacci(n):", max_new_tokens=24)
    clean = [i for i in range(4, len(full.text) - 2) if full.text[i:i + 2].isprintable() and "\ufffd" not in
             full.text[i:i + 2]]
    assert clean, f"no printable pair in {full.text!r}"
    stop = full.text[clean[0]:clean[0] + 2]
    cut = full.text.index(stop)
    tokens = next(n for n in range(1, len(full.token_ids) + 1) if stop in pipe.tokenizer.decode(full.token_ids[:n]))
    create = dict(model=server.model, prompt="def fibonacci(n):", max_tokens=24, stop=[stop])
    if stream:
        chunks = list(server.client().completions.create(**create, stream=True, stream_options={"include_usage": True}))
        text = "".join(c.choices[0].text for c in chunks if c.choices)
        finish = [c.choices[0].finish_reason for c in chunks if c.choices][-1]
        usage = chunks[-1].usage
    else:
        reply = server.client().completions.create(**create)
        text, finish, usage = reply.choices[0].text, reply.choices[0].finish_reason, reply.usage
    assert text == full.text[:cut] and finish == "stop"
    assert usage.completion_tokens == tokens


def test_stream_wire_format(server):
    """Chunks are `data: {json}` events: the role first, the finish reason last, then `data: [DONE]`."""
    body = {"messages": chat("Hi"), "max_tokens": 6, "stream": True}
    with server.http() as http:
        response = http.post("/v1/chat/completions", json=body)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    events = [e for e in response.text.split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events) and events[-1] == "data: [DONE]"
    chunks = [json.loads(e[len("data: "):]) for e in events[:-1]]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == chunks[0]["id"] for c in chunks)
    assert [c["choices"][0]["finish_reason"] for c in chunks][:-1] == [None] * (len(chunks) - 1)
    assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length") and "usage" not in chunks[-1]
    assert chunks[-1]["mirror_ort"]["new_tokens"] <= 6


def test_models_and_health(server):
    client = server.client()
    assert [m.id for m in client.models.list().data] == [server.model]
    card = client.models.retrieve(server.model)
    assert card.id == server.model and card.model_extra["mirror_ort"]["max_length"] > 0
    with pytest.raises(openai.NotFoundError, match="does not exist here"):
        client.models.retrieve("gpt-4")
    with server.http() as http:
        health = http.get("/health")
    assert health.status_code == 200 and health.json()["status"] == "ok" and health.json()["model"] == server.model


def test_metrics_count_requests_and_tokens(server):
    with server.http() as http:
        before = http.get("/metrics").text
        reply = server.client().completions.create(model=server.model, prompt="Once upon a time", max_tokens=10)
        response = http.get("/metrics")
    after = response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    sample = re.compile(r'^mirror_ort_\w+\{model="[^"]+"(,\w+="[^"]*")*\} [-+.\deE]+$')
    assert all(sample.match(line) for line in after.splitlines() if not line.startswith("#")), after
    delta = {name: metric(after, name) - metric(before, name) for name in (
        "completion_tokens_total", "prompt_tokens_total", "generations_total", "request_seconds_count")}
    assert delta == {"completion_tokens_total": reply.usage.completion_tokens,
                     "prompt_tokens_total": reply.usage.prompt_tokens, "generations_total": 1,
                     "request_seconds_count": 1}
    assert metric(after, "requests_total", endpoint="completion", outcome="completed") == \
        metric(before, "requests_total", endpoint="completion", outcome="completed") + 1
    for name in ("tokens_per_second", "tokens_per_target_call"):
        assert metric(after, name) > 0
    assert metric(after, "queue_depth") == 0 and metric(after, "running") == 0 and metric(after, "queue_size") == 4


BAD_REQUESTS = [
    # (path, body, status, param, code, words in the message)
    ("/v1/chat/completions", b"{not json", 400, None, "invalid_json", "not valid JSON"),
    ("/v1/chat/completions", b"[1, 2]", 400, None, "invalid_json", "an array, not an object"),
    ("/v1/chat/completions", {"messages": "hello"}, 400, "messages", "invalid_type", "'messages' must be"),
    ("/v1/chat/completions", {"messages": []}, 400, "messages", "invalid_value", "non-empty array"),
    ("/v1/chat/completions", {"messages": [{"role": "robot", "content": "hi"}]}, 400, "messages[0].role",
     "invalid_value", "use system"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": 5}]}, 400, "messages[0].content",
     "invalid_type", "must be a string"),
    ("/v1/chat/completions", {"messages": chat("hi"), "max_tokens": "ten"}, 400, "max_tokens", "invalid_type",
     "must be an integer"),
    ("/v1/chat/completions", {"messages": chat("hi"), "max_tokens": -1}, 400, "max_tokens", "invalid_value",
     "must be at least 1"),
    ("/v1/chat/completions", {"messages": chat("hi"), "max_tokens": 0}, 400, "max_tokens", "invalid_value",
     "must be at least 1"),
    ("/v1/chat/completions", {"messages": chat("hi"), "max_completion_tokens": 2.5}, 400, "max_completion_tokens",
     "invalid_type", "must be an integer"),
    ("/v1/chat/completions", {"messages": chat("hi"), "temperature": "hot"}, 400, "temperature", "invalid_type",
     "must be a number"),
    ("/v1/chat/completions", {"messages": chat("hi"), "temperature": -0.5}, 400, "temperature", "invalid_value",
     "0 (greedy) or more"),
    ("/v1/chat/completions", {"messages": chat("hi"), "top_p": 0}, 400, "top_p", "invalid_value", "(0, 1]"),
    ("/v1/chat/completions", {"messages": chat("hi"), "seed": -3}, 400, "seed", "invalid_value", "0 or more"),
    ("/v1/chat/completions", {"messages": chat("hi"), "stream": "yes"}, 400, "stream", "invalid_type",
     "true or false"),
    ("/v1/chat/completions", {"messages": chat("hi"), "stop": 5}, 400, "stop", "invalid_type", "'stop' must be"),
    ("/v1/chat/completions", {"messages": chat("hi"), "n": 2}, 400, "n", "invalid_value", "send n=1"),
    ("/v1/chat/completions", {"messages": chat("hi"), "n": 2, "stream": True}, 400, "n", "invalid_value", "n=1"),
    ("/v1/chat/completions", {"messages": chat("hi"), "model": "gpt-4"}, 404, "model", "model_not_found",
     "does not exist here"),
    ("/v1/chat/completions", {"messages": chat("hi"), "logprobs": True}, 400, "logprobs", "unsupported_parameter",
     "not supported"),
    ("/v1/chat/completions", {"messages": chat("hi"), "method": "beam"}, 400, "method", "invalid_value",
     "choose from mirror, sd, ar"),
    ("/v1/chat/completions", {"messages": chat("hi"), "method": 3}, 400, "method", "invalid_type", "a string"),
    ("/v1/chat/completions", {"messages": chat("hi"), "gamma": 0}, 400, "gamma", "invalid_value", "auto or at least 1"),
    ("/v1/chat/completions", {"messages": chat("hi"), "gamma": 2.5}, 400, "gamma", "invalid_type", 'or "auto"'),
    ("/v1/chat/completions", {"messages": chat("hi"), "draft": "magic"}, 400, "draft", "invalid_value",
     "choose from auto"),
    ("/v1/chat/completions", {"messages": chat("hi"), "kappa": 99}, 400, None, None, "the bundle's exported kappa"),
    ("/v1/chat/completions", {"messages": chat("hi"), "gamma": 2000}, 400, None, None, "--gamma 2000"),  # pipeline's
    ("/v1/chat/completions", {"messages": chat("word " * 600)}, 400, "messages", "context_length_exceeded",
     "the capacity is"),
    ("/v1/completions", {"prompt": "word " * 600, "stream": True}, 400, "prompt", "context_length_exceeded",
     "the capacity is"),
    ("/v1/completions", {"prompt": ""}, 400, "prompt", "invalid_value", "empty"),
    ("/v1/completions", {"prompt": ["one", "two"]}, 400, "prompt", "invalid_value", "one prompt per request"),
    ("/v1/completions", {"prompt": [1, 99999]}, 400, "prompt", "invalid_value", "token ids outside"),
    ("/v1/completions", {"prompt": {"text": "hi"}}, 400, "prompt", "invalid_type", "must be a string"),
    ("/v1/nothing", {}, 404, None, "not_found", "the endpoints are"),
]


@pytest.mark.parametrize("path,body,status,param,code,words", BAD_REQUESTS,
                         ids=[f"{i}-{b[3] or b[4]}" for i, b in enumerate(BAD_REQUESTS)])
def test_bad_request_gets_openai_error(server, path, body, status, param, code, words):
    with server.http() as http:
        if isinstance(body, bytes):
            response = http.post(path, content=body, headers={"content-type": "application/json"})
        else:
            response = http.post(path, json=body)
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert set(response.json()) == {"error"} and set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error" and error["param"] == param and error["code"] == code
    assert words in error["message"] and "\n" not in error["message"] and "Traceback" not in error["message"]
    assert "Traceback" not in server.log


def test_wrong_http_method(server):
    with server.http() as http:
        response = http.get("/v1/chat/completions")
    assert response.status_code == 405 and response.json()["error"]["code"] == "method_not_allowed"
    assert "use POST" in response.json()["error"]["message"]


def test_openai_client_raises_on_bad_request(server):
    with pytest.raises(openai.BadRequestError) as raised:
        server.client().chat.completions.create(model=server.model, messages=chat("hi"), max_tokens=-4)
    assert raised.value.status_code == 400 and raised.value.body["param"] == "max_tokens"


def test_auth(bundle_layers):
    s = Server(bundle_layers, "--max-new-tokens", "8", env={"MIRROR_ORT_API_KEY": "s3cret"})
    try:
        with s.http() as http:
            for headers, problem in (({}, "no Authorization header"),
                                     ({"Authorization": "Bearer wrong"}, "the API key is wrong")):
                for path in ("/health", "/v1/models", "/metrics"):
                    response = http.get(path, headers=headers)
                    assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"
                    assert response.json()["error"]["code"] == "invalid_api_key"
                    assert problem in response.json()["error"]["message"]
            assert http.get("/health", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        with pytest.raises(openai.AuthenticationError):
            s.client("wrong").chat.completions.create(model=s.model, messages=chat("hi"))
        reply = s.client("s3cret").chat.completions.create(model=s.model, messages=chat("hi"))
        assert reply.usage.completion_tokens > 0
    finally:
        s.stop()
    assert "Traceback" not in s.log


def test_no_auth_without_api_key(server):
    with server.http() as http:
        assert http.get("/v1/models").status_code == 200  # no Authorization header at all


def test_concurrent_clients(server, pipe):
    """16 clients x 4 requests, streaming and not: each answer equals its sequential greedy output or is a 429,
    and /health answers throughout."""
    prompts = [chat(f"Question number {i}: what is {i} plus {i}?") for i in range(8)]
    wants = {i: expected(pipe, prompts[i], max_new_tokens=8 + 2 * i) for i in range(8)}
    outcomes, health, done = [], [], threading.Event()
    lock = threading.Lock()

    def client_thread(c):
        client = server.client()
        for r in range(4):
            i = (c + r) % 8
            create = dict(model=server.model, messages=prompts[i], max_tokens=8 + 2 * i)
            try:
                if (c + r) % 2:
                    reply = client.chat.completions.create(**create)
                    got = (reply.choices[0].message.content, reply.usage.completion_tokens)
                else:
                    text, usage, _, _ = stream_text(client.chat.completions.create(
                        **create, stream=True, stream_options={"include_usage": True}))
                    got = (text, usage.completion_tokens)
                result = "ok" if got == (wants[i].text, len(wants[i].token_ids)) else f"wrong {i}: {got}"
            except openai.RateLimitError as e:
                result = "429" if e.response.headers.get("retry-after", "").isdigit() else "429 without Retry-After"
            with lock:
                outcomes.append(result)

    def health_thread():
        with server.http() as http:
            for _ in range(10_000):
                if done.is_set():
                    return
                health.append(http.get("/health", timeout=10).status_code)
                time.sleep(0.01)

    with server.http() as http:
        before = http.get("/metrics").text
    threads = [threading.Thread(target=client_thread, args=(c,)) for c in range(16)]
    watcher = threading.Thread(target=health_thread)
    watcher.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    done.set()
    watcher.join(30)
    with server.http() as http:
        after = http.get("/metrics").text
    assert len(outcomes) == 64
    assert set(outcomes) <= {"ok", "429"}, [o for o in outcomes if o not in ("ok", "429")]
    assert outcomes.count("ok") > 0
    assert health and set(health) == {200}
    completed = metric(after, "requests_total", outcome="completed") - metric(before, "requests_total",
                                                                             outcome="completed")
    rejected = metric(after, "requests_total", outcome="rejected") - metric(before, "requests_total",
                                                                           outcome="rejected")
    assert (completed, rejected) == (outcomes.count("ok"), outcomes.count("429"))


class LongStream:
    """A streaming completion that would run LONG_TOKENS tokens, read event by event."""

    def __init__(self, server):
        self.http = server.http()
        request = self.http.build_request("POST", "/v1/completions", json={
            "prompt": LONG_PROMPT, "max_tokens": LONG_TOKENS, "stream": True, "method": "mirror"})
        self.response = self.http.send(request, stream=True)
        self.lines = self.response.iter_lines()

    def events(self, limit=LONG_TOKENS + 10):
        """Up to ``limit`` more SSE data payloads."""
        return data_events(self.lines, limit)

    def close(self):
        """Hang up, read or not."""
        self.response.close()
        self.http.close()


def data_events(lines, limit):
    events = []
    for line in lines:
        if line.startswith("data: "):
            events.append(line[len("data: "):])
            if len(events) >= limit or events[-1] == "[DONE]":
                break
    return events


@pytest.fixture(scope="module")
def long_answer(pipe):
    want = pipe.generate(LONG_PROMPT, max_new_tokens=LONG_TOKENS, method="mirror")
    assert len(want.token_ids) == LONG_TOKENS, "the long prompt must not reach eos for these tests to mean anything"
    return want


def test_dropped_stream_frees_the_pipeline(server, pipe, long_answer):
    with server.http() as http:
        before = http.get("/metrics").text
    stream = LongStream(server)
    assert stream.response.status_code == 200
    assert len(stream.events(3)) == 3
    stream.close()  # the client is gone mid-stream
    reply = server.client().completions.create(model=server.model, prompt="Hello", max_tokens=12)
    want = expected(pipe, prompt="Hello", max_new_tokens=12)
    assert (reply.choices[0].text, reply.usage.completion_tokens) == (want.text, len(want.token_ids))
    with server.http() as http:
        after = http.get("/metrics").text
    assert metric(after, "requests_total", outcome="cancelled") == metric(before, "requests_total",
                                                                          outcome="cancelled") + 1
    dropped = metric(after, "completion_tokens_total") - metric(before, "completion_tokens_total") - len(want.token_ids)
    assert 0 < dropped < LONG_TOKENS  # it stopped when the client left, not at the end


def test_full_queue_answers_429(bundle_layers, long_answer):
    s = Server(bundle_layers, "--queue-size", "0")
    try:
        stream = LongStream(s)
        first = stream.events(1)  # the generation is running now
        with s.http() as http:
            busy = http.post("/v1/completions", json={"prompt": "Hello", "max_tokens": 4})
        rest = stream.events()
        stream.close()
    finally:
        s.stop()
    assert busy.status_code == 429 and busy.headers["retry-after"] == "1"
    assert busy.json()["error"]["type"] == "rate_limit_error" and busy.json()["error"]["code"] == "queue_full"
    chunks = [json.loads(e) for e in first + rest[:-1]]
    assert rest[-1] == "[DONE]" and "".join(c["choices"][0]["text"] for c in chunks) == long_answer.text


def test_request_timeout_ends_stream_with_error_chunk(bundle_layers, pipe, long_answer):
    t = time.perf_counter()
    pipe.generate(LONG_PROMPT, max_new_tokens=LONG_TOKENS, method="mirror")
    timeout = (time.perf_counter() - t) / 4  # the first chunk comes well before it, the end well after
    s = Server(bundle_layers, "--request-timeout", f"{timeout:.3f}")
    try:
        stream = LongStream(s)
        events = stream.events()
        stream.close()
        with pytest.raises(openai.APIError, match="request-timeout"):
            stream_text(s.client().chat.completions.create(model=s.model, messages=chat(LONG_PROMPT),
                                                           max_tokens=LONG_TOKENS, stream=True))
        with s.http() as http:
            plain = http.post("/v1/completions", json={"prompt": LONG_PROMPT, "max_tokens": LONG_TOKENS})
            health = http.get("/health").json()
    finally:
        s.stop()
    assert events[-1] == "[DONE]"
    error = json.loads(events[-2])["error"]
    assert error["code"] == "request_timeout" and error["type"] == "timeout_error"
    assert 1 < len(events) - 1 < LONG_TOKENS  # some text, then the error
    assert plain.status_code == 504 and plain.json()["error"]["code"] == "request_timeout"
    assert health["status"] == "ok"
    assert "Traceback" not in s.log


def test_sigterm_finishes_the_running_stream(bundle_layers, long_answer):
    s = Server(bundle_layers)
    stream = LongStream(s)
    first = stream.events(1)
    s.process.send_signal(signal.SIGTERM)
    rest = stream.events()
    stream.close()
    code = s.process.wait(60)
    s.stop()
    chunks = [json.loads(e) for e in first + rest[:-1]]
    assert rest[-1] == "[DONE]" and "".join(c["choices"][0]["text"] for c in chunks) == long_answer.text
    assert code in (0, -signal.SIGTERM), s.log
    assert "sessions released" in s.log and "Traceback" not in s.log


def test_ctrl_c_with_no_grace_cancels_the_running_stream(bundle_layers, long_answer):
    s = Server(bundle_layers, "--shutdown-timeout", "0")
    stream = LongStream(s)
    first = stream.events(1)
    s.process.send_signal(signal.SIGINT)
    rest = stream.events()
    stream.close()
    code = s.process.wait(60)
    s.stop()
    assert rest[-1] == "[DONE]" and json.loads(rest[-2])["error"]["code"] == "shutting_down"
    assert len(first + rest) - 2 < LONG_TOKENS  # text chunks: cut short
    assert code == 130 and "mirror-ort: interrupted" in s.log, s.log
    assert "sessions released" in s.log and "Traceback" not in s.log


def test_bad_server_options_are_one_line_errors(bundle_layers, tmp_path):
    for args, words in (([str(tmp_path / "missing")], "missing"),
                        ([str(bundle_layers), "--method", "mirror", "--gamma", "0"], "--gamma 0")):
        result = subprocess.run([sys.executable, "-m", "mirror_ort.cli", "serve", *args, "--port", "0"],
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 2 and words in result.stderr, result.stderr
        assert result.stderr.startswith("mirror-ort: error: ") and "Traceback" not in result.stderr


def test_sample_client_streams(server, pipe):
    messages = chat("What is speculative decoding?")
    want = expected(pipe, messages, max_new_tokens=16)
    result = subprocess.run([sys.executable, str(SAMPLE / "client.py"), "What is speculative decoding?",
                             "--base-url", server.url + "/v1", "--max-tokens", "16"],
                            capture_output=True, text=True, encoding="utf-8", timeout=120)
    assert result.returncode == 0, result.stderr
    reply, summary = result.stdout.rsplit("\n[", 1)
    assert reply == want.text
    assert f"{len(want.token_ids)} completion tokens; mirror" in summary and "tokens per target call" in summary


def test_sample_load_test_finds_nothing_lost(server):
    result = subprocess.run([sys.executable, str(SAMPLE / "load_test.py"), "--base-url", server.url + "/v1",
                             "--requests", "8", "--concurrency", "4", "--max-tokens", "8"],
                            capture_output=True, text=True, encoding="utf-8", timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 errors, 0 lost or wrong" in result.stdout and "latency p50" in result.stdout


def test_text_stream_holds_back_a_partial_stop(pipe):
    """Token by token: a stop string split across two tokens is held back, never sent in part."""
    from mirror_ort.serve.text import TextStream

    ids = pipe.encode("The capital of France is Paris, and the capital of Italy is Rome.")
    text = pipe.tokenizer.decode(ids)
    ends = [len(pipe.tokenizer.decode(ids[:n])) for n in range(1, len(ids) + 1)]
    # the last character of token k and the first of token k + 1, found nowhere earlier in the text
    k = next(k for k in range(len(ids) // 2, len(ids) - 1) if text.index(text[ends[k] - 1:ends[k] + 1]) == ends[k] - 1)
    stop = text[ends[k] - 1:ends[k] + 1]
    stream = TextStream(pipe.tokenizer, pipe.tokenizer.eos_token_ids, ["never in this text", stop])
    sent = "".join(stream.feed([i]) for i in ids[:k + 1])
    assert sent == text[:ends[k] - 1] and not stream.stopped  # the stop's first character waits
    sent += stream.feed([ids[k + 1]]) + stream.finish()
    assert stream.stopped and stream.finish_reason == "stop" and sent == text[:ends[k] - 1]
    assert stream.completion_tokens == k + 2
