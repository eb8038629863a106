"""One generation at a time on the loaded pipeline; other requests wait in a bounded queue.

The pipeline is not async: it runs on one worker thread, which hands each step's text (when the
request streams) and then the outcome to the request's ``Generation`` on the event loop. A cancelled generation (client gone, timeout,
shutdown) stops at its next step: closing ``Pipeline.steps`` ends it within one step.
"""

import asyncio
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass

from ..errors import MirrorError
from .errors import ApiError
from .metrics import Metrics
from .schema import GenerationRequest
from .text import TextStream

log = logging.getLogger("mirror_ort.serve")
RETRY_AFTER_S = 1


@dataclass
class Piece:
    text: str


@dataclass
class Finished:
    text: str  # the whole answer (a stream has had it piece by piece)
    finish_reason: str
    completion_tokens: int
    stats: dict
    queue_seconds: float


@dataclass
class Failed:
    error: ApiError


_SHUT_DOWN = Failed(ApiError(503, "the server shut down before this request ran: retry on another replica or later",
                             type="server_error", code="shutting_down"))


class Generation:
    """An admitted request: its events arrive in ``events`` (on the event loop); ``cancel`` stops it."""

    def __init__(self, request: GenerationRequest, loop: asyncio.AbstractEventLoop):
        self.request, self.loop = request, loop
        self.events: asyncio.Queue = asyncio.Queue()
        self.started = False
        self.arrived = time.perf_counter()
        self._cancelled = threading.Event()

    def cancel(self) -> None:
        self._cancelled.set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def emit(self, event) -> None:
        """Hand an event to the event loop (from the worker thread)."""
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, event)
        except RuntimeError:  # the loop has closed: nobody is listening any more
            pass


class Scheduler:
    def __init__(self, pipeline, queue_size: int, metrics: Metrics):
        self.pipeline, self.queue_size, self.metrics = pipeline, queue_size, metrics
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mirror-ort-generate")
        self._admitted: set[Generation] = set()  # running and waiting; touched on the event loop only
        self._closing = False

    @property
    def running(self) -> int:
        return sum(g.started for g in self._admitted)

    @property
    def queued(self) -> int:
        return len(self._admitted) - self.running

    def submit(self, request: GenerationRequest) -> Generation:
        """Admit a request, or refuse it: 429 when the queue is full, 503 while shutting down."""
        if self._closing:
            raise ApiError(503, "the server is shutting down: retry on another replica or later",
                           type="server_error", code="shutting_down")
        if len(self._admitted) > self.queue_size:
            raise ApiError(429, f"the server is busy: {self.queue_size} requests already wait for the model; "
                           f"retry after {RETRY_AFTER_S} s", type="rate_limit_error", code="queue_full",
                           headers={"Retry-After": str(RETRY_AFTER_S)})
        generation = Generation(request, asyncio.get_running_loop())
        self._admitted.add(generation)
        future = self._executor.submit(self._generate, generation)
        future.add_done_callback(lambda f: self._finished(generation, f))
        return generation

    async def close(self) -> None:
        """Cancel what is queued or running, wait for the worker, and let go of the pipeline (its sessions
        are freed unless someone else holds it)."""
        self._closing = True
        for generation in list(self._admitted):
            generation.cancel()
        await asyncio.to_thread(self._executor.shutdown, wait=True, cancel_futures=True)
        self.pipeline = None

    def _finished(self, generation: Generation, future) -> None:
        if future.cancelled():  # never started: the executor was shut down
            generation.emit(_SHUT_DOWN)
        try:
            generation.loop.call_soon_threadsafe(self._admitted.discard, generation)
        except RuntimeError:  # the loop has closed
            pass

    def _generate(self, generation: Generation) -> None:
        """Runs on the worker thread."""
        if generation.cancelled:  # the client left, timed out or the server is closing while it waited
            if self._closing:
                generation.emit(_SHUT_DOWN)
            return
        generation.started = True
        queue_seconds = time.perf_counter() - generation.arrived
        request, pipe = generation.request, self.pipeline
        text = TextStream(pipe.tokenizer, pipe.tokenizer.eos_token_ids, request.stop)
        stats = None
        try:
            with closing(pipe.steps(request.tokens, **request.decoding)) as steps:
                for new, stats in steps:
                    piece = text.feed(new)
                    if piece and request.stream:  # a whole answer waits for Finished: no wake-up per step
                        generation.emit(Piece(piece))
                    if text.stopped or generation.cancelled:
                        break
        except MirrorError as e:
            generation.emit(Failed(ApiError(400, str(e))))
            return
        except Exception as e:  # a fault of the server or the runtime, not of the request
            log.exception("generation failed")
            generation.emit(Failed(ApiError(500, f"generation failed: {type(e).__name__}: {' '.join(str(e).split())}",
                                            type="server_error", code="generation_failed")))
            return
        finally:
            if stats is not None:
                self.metrics.generation(stats.as_dict())
        piece = text.finish()
        if piece and request.stream:
            generation.emit(Piece(piece))
        generation.emit(Finished(text.text, text.finish_reason, text.completion_tokens,
                                 stats.as_dict() if stats else {}, queue_seconds))
