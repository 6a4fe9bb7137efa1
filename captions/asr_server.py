"""The ``/api/asr-streaming`` WebSocket endpoint (Kyutai ``moshi-server`` protocol), on aiohttp.

A thin asyncio layer over :mod:`captions.kyutai_protocol`, backed by whatever engine
the :class:`~captions.runtime.EngineRunner` runs (the Whisper default or ``kyutai``).

- Mount it into any aiohttp application with :func:`add_asr_routes`, or run it alone
  with :func:`create_asr_app` (``captions asr-serve``).
- Auth: the key comes in the ``kyutai-api-key`` header or the ``auth_id`` query
  parameter and must be one of the configured keys; anything else gets HTTP 401
  before the WebSocket upgrade. An empty key set is refused at start: never an open
  server.
- One connection is one engine stream. When the engine has no free slot the client
  gets ``Error{"no free channels"}`` and a close.
- Bad frames (not MessagePack, unknown type, pcm of the wrong type, over the size
  limit, a text frame) get ``Error{message}`` and a close; other connections are
  untouched. Frames over four times the limit are cut by aiohttp itself (close 1009).
- Timeouts, as moshi-server (keyword arguments of :class:`AsrServerLimits`): a ping
  every 10 s, close after 20 s with nothing received, close after 120 s without audio.
  Stricter than moshi-server on one point: pongs do not count as something received
  (moshi-server keeps a silent client that answers pings until its 120 s data timeout).
- ``Init`` is answered with ``Ready``, as moshi-server answers it (it also sends one
  ``Ready`` of its own at connect, as here).
- Output: each word that becomes final is sent as ``Word`` then ``EndWord``; a
  ``Step`` per 80 ms of audio the engine processed (``prs`` from the engine's
  end-of-turn heads when it has them, else neutral zeros); each ``Marker`` is echoed
  once the audio before it plus the engine's delay has been processed.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hmac
import itertools
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
from aiohttp import WSMsgType, web

from captions.audio import PCM
from captions.engine import Engine
from captions.events import Speaker
from captions.kyutai_protocol import (
    DEFAULT_MAX_MESSAGE_BYTES,
    NEUTRAL_PAUSE_PROBABILITIES,
    NO_FREE_CHANNELS,
    SAMPLE_RATE,
    AsrStreamState,
    Audio,
    Error,
    Init,
    Marker,
    OggOpus,
    Ready,
    ServerMessage,
    decode_client_message,
    encode,
)
from captions.runtime import EngineRunner, SpeechStream
from common.closecodes import CloseCode
from common.exceptions import CapacityError, CaptionsError, ProtocolError
from common.security_headers import security_headers

log = logging.getLogger(__name__)

ASR_STREAMING_PATH = "/api/asr-streaming"
API_KEY_HEADER = "kyutai-api-key"
API_KEY_QUERY = "auth_id"


@dataclass(frozen=True)
class AsrServerLimits:
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    ping_interval: float = 10.0
    idle_timeout: float = 20.0
    """Close when nothing at all was received for this long."""
    audio_timeout: float = 120.0
    """Close when no audio was received for this long."""
    max_pending_markers: int = 64
    tick_seconds: float = 0.08
    """How often Step messages and due markers are checked."""
    marker_grace: float = 1.0
    """When the engine is idle, how long a due marker waits for the last words."""
    max_streams_per_key: int | None = None
    """Streams one API key may hold at once (None: up to the engine's capacity); beyond,
    the client gets ``no free channels``, as when the engine is full, so that one key
    holder cannot take every slot from the others."""


class AsrStreamingHandler:
    """aiohttp handler for one endpoint; each request is one client stream."""

    def __init__(
        self, runner: EngineRunner, api_keys: Iterable[str], limits: AsrServerLimits
    ) -> None:
        self.runner = runner
        self.api_keys = tuple(k for k in api_keys if k)
        if not self.api_keys:
            raise CaptionsError("the ASR streaming endpoint needs at least one API key")
        self.limits = limits
        self._ids = itertools.count(1)
        self.active = 0
        self._by_key: collections.Counter[str] = collections.Counter()

    def authorized(self, request: web.Request) -> str | None:
        """The configured key the request presents, or None."""
        key = request.headers.get(API_KEY_HEADER) or request.query.get(API_KEY_QUERY) or ""
        # Compare against every key in constant time, so timing reveals nothing.
        matches = [hmac.compare_digest(key.encode(), k.encode()) for k in self.api_keys]
        return next((k for k, ok in zip(self.api_keys, matches, strict=True) if ok), None)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        key = self.authorized(request)
        if key is None:
            raise web.HTTPUnauthorized(text="missing or invalid API key\n")
        ws = web.WebSocketResponse(
            heartbeat=self.limits.ping_interval,
            max_msg_size=4 * self.limits.max_message_bytes,
        )
        await ws.prepare(request)
        per_key = self.limits.max_streams_per_key
        try:
            if per_key is not None and self._by_key[key] >= per_key:
                raise CapacityError("this API key holds all the streams it may")
            stream = self.runner.open_stream(Speaker(f"asr-{next(self._ids)}"))
        except CapacityError:
            await ws.send_bytes(encode(Error(NO_FREE_CHANNELS)))
            await ws.close()
            return ws
        self.active += 1
        self._by_key[key] += 1
        try:
            await _Connection(ws, stream, self.runner, self.limits).run()
        finally:
            self.active -= 1
            self._by_key[key] -= 1
            if not stream.closed:
                stream.abort()
        return ws


class _Connection:
    def __init__(
        self,
        ws: web.WebSocketResponse,
        stream: SpeechStream,
        runner: EngineRunner,
        limits: AsrServerLimits,
    ) -> None:
        self.ws = ws
        self.stream = stream
        self.runner = runner
        engine = runner.engine
        # Markers whose audio was processed, waiting for that step's words to go out first.
        self._ripe: list[tuple[Marker, int, float]] = []
        self.limits = limits
        self.state = AsrStreamState(
            delay_seconds=engine.info.delay_seconds,
            max_pending_markers=limits.max_pending_markers,
        )
        self._send_lock = asyncio.Lock()
        self._opus: Any = None

    async def send(self, message: ServerMessage) -> None:
        async with self._send_lock:
            if not self.ws.closed:
                await self.ws.send_bytes(encode(message))

    async def run(self) -> None:
        await self.send(Ready())
        tasks = [
            asyncio.create_task(self._forward_words()),
            asyncio.create_task(self._tick()),
        ]
        try:
            await self._receive()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if not self.ws.closed:
                await self.ws.close()

    async def _fail(self, message: str) -> None:
        with contextlib.suppress(ConnectionError, RuntimeError):
            await self.send(Error(message))
        # The Error message carries the detail; a close reason is limited to 123 bytes.
        await self.ws.close(code=CloseCode.POLICY_VIOLATION)

    async def _receive(self) -> None:
        now = time.monotonic()
        last_any = last_audio = now
        while not self.ws.closed:
            now = time.monotonic()
            deadline = min(
                last_any + self.limits.idle_timeout, last_audio + self.limits.audio_timeout
            )
            try:
                # An absolute deadline, not receive(timeout=...): aiohttp restarts that
                # timeout on every pong it handles internally, so a silent client whose
                # library answers our pings would never time out.
                async with asyncio.timeout_at(_loop_time(deadline)):
                    msg = await self.ws.receive()
            except TimeoutError:
                idle = time.monotonic() - last_any >= self.limits.idle_timeout
                reason = "nothing received" if idle else "no audio received"
                log.info("closing ASR stream %s: %s", self.stream.speaker.id, reason)
                await self._fail(f"timeout: {reason}")
                return
            last_any = time.monotonic()
            if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED):
                return
            if msg.type == WSMsgType.ERROR:
                log.info("ASR stream %s: %s", self.stream.speaker.id, self.ws.exception())
                return
            if msg.type != WSMsgType.BINARY:
                await self._fail("messages must be binary MessagePack frames")
                return
            try:
                message = decode_client_message(msg.data, max_bytes=self.limits.max_message_bytes)
                got_audio = self._handle(message)
            except CaptionsError as exc:  # a bad frame, or the stream closed under us
                await self._fail(str(exc))
                return
            if isinstance(message, Init):
                await self.send(Ready())
            if got_audio:
                last_audio = last_any

    def _handle(self, message: object) -> bool:
        """Applies one client message; returns True if it carried audio."""
        if isinstance(message, Audio):
            pcm = message.pcm
        elif isinstance(message, OggOpus):
            pcm = self._decode_opus(message.data)
        elif isinstance(message, Marker):
            self.state.marker_received(message.id)
            return False
        else:  # Init (answered by the caller), Ping
            return False
        if pcm.size:
            self.stream.push_audio(pcm, SAMPLE_RATE)
            self.state.audio_received(pcm.size)
        return True

    def _decode_opus(self, data: bytes) -> PCM:
        import sphn

        if self._opus is None:
            self._opus = sphn.OpusStreamReader(SAMPLE_RATE)
        try:
            pcm: PCM = np.asarray(self._opus.append_bytes(data), dtype=np.float32)
        except Exception as exc:  # sphn raises its own errors for corrupt streams
            raise ProtocolError(f"OggOpus data not decodable: {exc}") from None
        return pcm

    def _processed_seconds(self) -> float:
        inbox = self.stream.session.inbox
        return inbox.position / inbox.sample_rate

    async def _forward_words(self) -> None:
        async for event in self.stream:
            for message in self.state.words(event):
                await self.send(message)
        if not self.ws.closed:  # the engine failed, or the server is shutting down
            await self._fail("the stream ended on the server")

    async def _tick(self) -> None:
        session = self.stream.session
        while not self.ws.closed:
            processed = self._processed_seconds()
            prs = getattr(session, "pause_probabilities", NEUTRAL_PAUSE_PROBABILITIES)
            buffered = round(session.inbox.available * SAMPLE_RATE / session.inbox.sample_rate)
            for step in self.state.steps(processed, prs, buffered):
                await self.send(step)
            for marker in self._ripe_markers(processed):
                await self.send(marker)
            await asyncio.sleep(self.limits.tick_seconds)

    def _ripe_markers(self, processed: float) -> list[Marker]:
        """Markers to echo now, strictly after the words of the audio before them.

        The engine consumes audio at the start of a step and hands out its words at the
        end, so a marker is echoed only after two more step boundaries (the words of the
        step in flight were delivered a full step earlier), or, when the engine has gone
        quiet, after ``marker_grace`` seconds.
        """
        now = time.monotonic()
        steps = self.runner.steps
        self._ripe += [(m, steps, now) for m in self.state.due_markers(processed)]
        out: list[Marker] = []
        while self._ripe:
            marker, seen_steps, seen_at = self._ripe[0]
            if steps < seen_steps + 2 and now - seen_at < self.limits.marker_grace:
                break
            out.append(marker)
            self._ripe.pop(0)
        return out


def _loop_time(monotonic_deadline: float) -> float:
    """A ``time.monotonic()`` deadline on the running loop's clock."""
    return asyncio.get_running_loop().time() + (monotonic_deadline - time.monotonic())


_HANDLER_KEY = web.AppKey("asr_streaming_handler", AsrStreamingHandler)
_RUNNER_KEY = web.AppKey("asr_streaming_runner", EngineRunner)


def add_asr_routes(
    app: web.Application,
    runner: EngineRunner,
    api_keys: Iterable[str],
    *,
    path: str = ASR_STREAMING_PATH,
    limits: AsrServerLimits | None = None,
) -> AsrStreamingHandler:
    """Mounts the endpoint at ``path`` on ``app``, backed by ``runner`` (owned by the caller).

    Raises CaptionsError when ``api_keys`` is empty.
    """
    handler = AsrStreamingHandler(runner, api_keys, limits or AsrServerLimits())
    app.router.add_get(path, handler.handle)
    app[_HANDLER_KEY] = handler
    return handler


def create_asr_app(
    engine: Engine,
    api_keys: Iterable[str],
    *,
    limits: AsrServerLimits | None = None,
    max_buffer_seconds: float = 30.0,
) -> web.Application:
    """A standalone application serving only the endpoint; it owns the engine's runner."""
    app = web.Application()

    async def add_headers(request: web.Request, response: web.StreamResponse) -> None:
        response.headers.update(security_headers(request.host, tls=request.secure))

    app.on_response_prepare.append(add_headers)
    runner = EngineRunner(engine, max_buffer_seconds=max_buffer_seconds)
    app[_RUNNER_KEY] = runner
    add_asr_routes(app, runner, api_keys, limits=limits)

    async def start(app: web.Application) -> None:
        app[_RUNNER_KEY].start()

    async def stop(app: web.Application) -> None:
        await app[_RUNNER_KEY].aclose()

    app.on_startup.append(start)
    app.on_cleanup.append(stop)
    return app


def runner_of(app: web.Application) -> EngineRunner:
    """The engine runner of an application made by :func:`create_asr_app`."""
    return app[_RUNNER_KEY]
