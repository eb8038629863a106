"""The ASGI app: OpenAI's chat and text completions, models, health and metrics over one pipeline.

    app = create_app(Pipeline.from_bundle("bundle/"), model_name="smollm2")

A request is parsed and checked on the event loop, admitted to the scheduler's bounded queue,
and answered from the events its generation sends: one JSON body, or server-sent events that
end with ``data: [DONE]``. The first event is awaited before anything is sent, so an error the
pipeline finds (a MirrorError) still gets its status; after that, errors are error chunks.
"""

import asyncio
import dataclasses
import hmac
import logging
import time
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import (
    JSONResponse,
    PlainTextResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Route

from ..generation import METHODS
from .errors import ApiError, error_body
from .metrics import Metrics
from .responses import Reply, sse
from .scheduler import Failed, Piece, Scheduler
from .schema import ServedModel, parse_chat, parse_completion, parse_json

log = logging.getLogger("mirror_ort.serve")
PARSERS = {"chat": parse_chat, "completion": parse_completion}
ENDPOINTS = "/v1/chat/completions, /v1/completions, /v1/models, /health, /metrics"
SHUTTING_DOWN = ApiError(503, "the server is shutting down and cancelled this request: retry on another replica or "
                         "later", type="server_error", code="shutting_down")


def create_app(pipeline, *, model_name: str, defaults: dict | None = None, api_key: str | None = None,
               queue_size: int = 16, request_timeout: float = 300.0) -> Starlette:
    """``defaults``: decoding options of requests that leave them out (``Pipeline.settings`` names; a
    missing or None one is the bundle's own default)."""
    service = _Service(pipeline, model_name, defaults or {}, queue_size, request_timeout)

    @asynccontextmanager
    async def lifespan(app):
        yield
        await service.close()

    routes = [
        Route("/v1/chat/completions", service.chat, methods=["POST"]),
        Route("/v1/completions", service.completion, methods=["POST"]),
        Route("/v1/models", service.list_models, methods=["GET"]),
        Route("/v1/models/{model_id:path}", service.retrieve_model, methods=["GET"]),
        Route("/health", service.health, methods=["GET"]),
        Route("/metrics", service.metrics_text, methods=["GET"]),
    ]
    handlers = {ApiError: _api_error, HTTPException: _http_error, Exception: _server_error}
    app = Starlette(routes=routes, exception_handlers=handlers, lifespan=lifespan)
    if api_key:
        app.add_middleware(BearerAuth, api_key=api_key)
    return app


class _Service:
    def __init__(self, pipeline, model_name: str, defaults: dict, queue_size: int, request_timeout: float):
        bundle = pipeline.bundle
        self.model = ServedModel(model_name, pipeline.tokenizer, pipeline.max_length, bundle.vocab_size,
                                 bool(bundle.manifest.tokenizer.chat_template), defaults, pipeline.settings)
        self.facts = {"max_length": pipeline.max_length, "kappa": bundle.kappa, "target_ep": pipeline.prefix.provider,
                      "draft_ep": pipeline.draft.provider if pipeline.draft else None, "methods": list(METHODS),
                      "defaults": dataclasses.asdict(pipeline.settings(**defaults))}
        self.created = int(time.time())
        self.metrics = Metrics()
        self.scheduler = Scheduler(pipeline, queue_size, self.metrics)
        self.request_timeout = request_timeout

    async def close(self) -> None:
        waiting = self.scheduler.running + self.scheduler.queued
        if waiting:
            log.info("cancelling %d request(s) still running or queued", waiting)
        await self.scheduler.close()
        log.info("generation stopped; sessions released")

    async def chat(self, request: Request) -> Response:
        return await self._generate(request, "chat")

    async def completion(self, request: Request) -> Response:
        return await self._generate(request, "completion")

    async def list_models(self, request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [self._model_card()]})

    async def retrieve_model(self, request: Request) -> Response:
        model_id = request.path_params["model_id"]
        if model_id != self.model.name:
            raise ApiError(404, f"the model {model_id!r} does not exist here: this server serves {self.model.name!r}",
                           param="model", code="model_not_found")
        return JSONResponse(self._model_card())

    async def health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok", "model": self.model.name, "running": self.scheduler.running,
                             "queued": self.scheduler.queued})

    async def metrics_text(self, request: Request) -> Response:
        text = self.metrics.render(self.model.name, self.scheduler.running, self.scheduler.queued,
                                   self.scheduler.queue_size)
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4; charset=utf-8")

    def _model_card(self) -> dict:
        return {"id": self.model.name, "object": "model", "created": self.created, "owned_by": "mirror-ort",
                "mirror_ort": self.facts}

    async def _generate(self, request: Request, kind: str) -> Response:
        start = time.perf_counter()
        try:
            parsed = PARSERS[kind](parse_json(await request.body()), self.model)
            generation = self.scheduler.submit(parsed)
        except ApiError as e:
            self.metrics.request(kind, "rejected" if e.status == 429 else "error", 0.0)
            raise
        reply = Reply(kind, self.model.name, len(parsed.tokens))
        deadline = start + self.request_timeout
        gone = asyncio.ensure_future(_disconnected(request))
        outcome, streaming = "error", False
        try:
            event = await self.next_event(generation, deadline, gone)
            if isinstance(event, Failed):
                raise event.error
            if parsed.stream:
                streaming = True
                gone.cancel()  # from here on the streaming response watches the client
                return _EventStream(self, reply, generation, event, deadline, start)
            outcome = "completed"  # a request that does not stream gets Finished or Failed only
            return JSONResponse(reply.completion(event.text, event))
        except _Ended as e:
            outcome = e.outcome
            return _client_gone() if e.outcome == "cancelled" else _api_error(None, self.timeout_error())
        except asyncio.CancelledError:  # shutdown's grace period is over
            outcome = "cancelled"
            return _api_error(None, SHUTTING_DOWN)
        finally:
            gone.cancel()
            if not streaming:
                generation.cancel()  # a no-op once it has finished
                self.metrics.request(kind, outcome, time.perf_counter() - start)

    async def next_event(self, generation, deadline: float, gone: asyncio.Future | None = None):
        """The generation's next event; _Ended when the deadline passes or the client disconnects first."""
        get = asyncio.ensure_future(generation.events.get())
        waits = {get, gone} if gone is not None else {get}
        done, _ = await asyncio.wait(waits, timeout=max(deadline - time.perf_counter(), 0.0),
                                     return_when=asyncio.FIRST_COMPLETED)
        if get in done:
            return get.result()
        get.cancel()
        raise _Ended("cancelled" if gone is not None and gone in done else "timeout")

    def timeout_error(self) -> ApiError:
        return ApiError(504, f"the request ran past the server's --request-timeout of {self.request_timeout:g} s: "
                        "ask for fewer tokens (max_tokens) or retry later", type="timeout_error",
                        code="request_timeout")


class _EventStream(StreamingResponse):
    """Server-sent events of one generation. However the response ends (done, client gone, shutdown),
    the generation is cancelled and the request counted."""

    def __init__(self, service: _Service, reply: Reply, generation, first, deadline: float, start: float):
        super().__init__(self._events(first), media_type="text/event-stream",
                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self.service, self.reply, self.generation, self.deadline, self.start = service, reply, generation, deadline, start
        self.outcome = "cancelled"  # until the stream reaches its end

    async def __call__(self, scope, receive, send):
        sent = {"start": False, "end": False}

        async def send_and_note(message):
            sent["start"] = sent["start"] or message["type"] == "http.response.start"
            sent["end"] = sent["end"] or (message["type"] == "http.response.body" and not message.get("more_body"))
            await send(message)

        try:
            await super().__call__(scope, receive, send_and_note)
        except asyncio.CancelledError:  # shutdown's grace period is over: end the stream with an error
            self.outcome = "cancelled"
            if not sent["start"]:
                await _api_error(None, SHUTTING_DOWN)(scope, receive, send)
            elif not sent["end"]:
                ending = sse(SHUTTING_DOWN.body()) + sse("[DONE]")
                await send({"type": "http.response.body", "body": ending.encode(), "more_body": False})
        finally:
            self.generation.cancel()
            self.service.metrics.request(self.reply.kind, self.outcome, time.perf_counter() - self.start)

    async def _events(self, event):
        reply = self.reply
        if reply.kind == "chat":
            yield sse(reply.chunk(role=True))
        while True:  # one event per pipeline step, then Finished or Failed
            if isinstance(event, Piece):
                yield sse(reply.chunk(event.text))
            elif isinstance(event, Failed):
                yield sse(event.error.body())
                self.outcome = "error"
                break
            else:
                yield sse(reply.chunk(finished=event))
                if self.generation.request.include_usage:
                    yield sse(reply.usage_chunk(event))
                self.outcome = "completed"
                break
            try:
                event = await self.service.next_event(self.generation, self.deadline)
            except _Ended:
                yield sse(self.service.timeout_error().body())
                self.outcome = "timeout"
                break
        yield sse("[DONE]")


class _Ended(Exception):
    """A request left before its generation finished: ``outcome`` is cancelled (client gone) or timeout."""

    def __init__(self, outcome: str):
        super().__init__(outcome)
        self.outcome = outcome


async def _disconnected(request: Request) -> None:
    """Returns once the client has closed the connection (the body has been read before)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _client_gone() -> Response:
    return Response(status_code=499)  # nobody reads it: the access log shows that the client left


class BearerAuth:
    """Every request needs ``Authorization: Bearer KEY`` (ASGI middleware)."""

    def __init__(self, app, api_key: str):
        self.app, self._expected = app, f"Bearer {api_key}".encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            given = Headers(scope=scope).get("authorization", "").encode()
            if not hmac.compare_digest(given, self._expected):
                problem = "no Authorization header" if not given else "the API key is wrong"
                body = error_body(f"{problem}: send Authorization: Bearer <the server's --api-key>",
                                  "invalid_request_error", code="invalid_api_key")
                await JSONResponse(body, 401, headers={"WWW-Authenticate": "Bearer"})(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _api_error(request, e: ApiError) -> Response:
    return JSONResponse(e.body(), e.status, headers=e.headers)


def _http_error(request: Request, e: HTTPException) -> Response:
    if e.status_code == 404:
        message, code = f"there is no {request.url.path}: the endpoints are {ENDPOINTS}", "not_found"
    elif e.status_code == 405:
        allowed = (e.headers or {}).get("Allow", "another method")
        message, code = f"{request.method} is not allowed on {request.url.path}: use {allowed}", "method_not_allowed"
    else:
        message, code = str(e.detail), None
    return JSONResponse(error_body(message, "invalid_request_error", code=code), e.status_code, headers=e.headers)


def _server_error(request: Request, e: Exception) -> Response:
    log.error("internal error on %s: %s: %s", request.url.path, type(e).__name__, e)
    return JSONResponse(error_body(f"internal server error: {type(e).__name__}", "server_error"), 500)
