"""The captioning sidecar: a hidden participant that captions every speaker of a room.

It joins the room through the SFU like any participant (``sfu.client``, with a hidden
``captioner`` token), subscribes to every published microphone, and hands each speaker's
decoded audio to a :class:`~meeting.captioner.RoomCaptioner`. Caption events go to the
server over the authenticated ``/captions/publish`` WebSocket
(:class:`~meeting.publisher.CaptionPublisher`, docs/captions-api.md), which stores finals
and fans everything out, and which also sends the room's caption state (on/off,
language; owned by the server's hub): until the sidecar has heard it, no audio is
captioned. ``captions serve`` runs this very code over loopback, and ``captions
sidecar`` runs it as its own process.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from captions.runtime import EngineRunner
from common.aio import Backoff, cancel_and_wait
from common.exceptions import CaptionsError
from meeting.captioner import RoomCaptioner
from meeting.publisher import CaptionPublisher

if TYPE_CHECKING:  # the SFU client pulls in aiortc: imported when the sidecar runs
    from sfu.client import ClientEvent, RemoteParticipant, RemoteTrack, SfuClient

log = logging.getLogger(__name__)


class Sidecar:
    """Captions one room: joins it through the SFU, publishes to the server, reconnects.

    ``run()`` keeps the sidecar in the room until :meth:`stop`; if the SFU connection
    drops (server restart), streams are flushed and it joins again.
    """

    def __init__(
        self,
        sfu_url: str,
        token: str,
        runner: EngineRunner,
        *,
        publish_url: str | None = None,
        reconnect_seconds: float = 1.0,
        reconnect_max_seconds: float = 10.0,
        ssl: Any = True,
        **captioner_options: Any,
    ) -> None:
        self.sfu_url = sfu_url.rstrip("/")
        self.token = token
        self.runner = runner
        base = self.sfu_url.replace("http", "ws", 1)
        self.publisher = CaptionPublisher(
            publish_url or f"{base}/captions/publish",
            token,
            ssl=ssl,
            reconnect_seconds=reconnect_seconds,
            reconnect_max_seconds=reconnect_max_seconds,
        )
        self.ssl = ssl
        self.reconnect_seconds = reconnect_seconds
        self.reconnect_max_seconds = reconnect_max_seconds
        self.captioner_options = captioner_options
        self.captioner: RoomCaptioner | None = None
        self.joined = asyncio.Event()
        self._stop = asyncio.Event()
        self._client: SfuClient | None = None

    async def run(self) -> None:
        from sfu.client import SfuClient  # the SFU client pulls in aiortc

        self.publisher.start()
        backoff = Backoff(base=self.reconnect_seconds, cap=self.reconnect_max_seconds)
        try:
            async for _ in backoff.attempts(stop=self._stop):
                try:
                    self._client = await SfuClient.connect(self.sfu_url, self.token, ssl=self.ssl)
                except CaptionsError as exc:
                    log.warning("sidecar cannot join %s: %s", self.sfu_url, exc)
                    if getattr(exc, "code", None) in ("token_invalid", "token_expired"):
                        raise
                    continue
                backoff.reset()  # joined: a later drop starts again from the shortest wait
                try:
                    if self._stop.is_set():
                        # stop() came while we were joining, saw no client to leave,
                        # and no event may ever arrive to end _follow: leave now.
                        break
                    await self._follow(self._client)
                finally:
                    await self._client.close()  # bounded, even when we are cancelled
                    self._client = None
        finally:
            await self.publisher.aclose()

    async def stop(self) -> None:
        """Leaves the room after flushing every stream to the server."""
        self._stop.set()
        if self._client is not None:
            await self._client.leave()

    async def _follow(self, client: SfuClient) -> None:
        # Nothing is captioned until the hub has said whether captions are on.
        state = self.publisher.room_state
        captioner = self.captioner = RoomCaptioner(
            client.room,
            self.runner,
            self.publisher,
            enabled=state.enabled if state is not None else False,
            language=state.language if state is not None else None,
            **self.captioner_options,
        )
        captioner.set_participants(len(client.participants))
        self.publisher.status(captioner.status())
        for participant in client.participants.values():
            captioner.set_muted(participant.identity, participant.name, participant.audio_muted)
        self.joined.set()
        consumers: dict[str, asyncio.Task[None]] = {}
        # The newest state (again, if the captioner was made with it), then every change.
        follower = asyncio.create_task(self._follow_state(captioner, seen=0))
        try:
            async for event in client.events():
                if event.type == "closed" or self._stop.is_set():
                    break
                await self._on_event(client, captioner, event, consumers)
        finally:
            await cancel_and_wait(follower)
            await asyncio.gather(*(cancel_and_wait(task) for task in consumers.values()))
            await captioner.aclose()
            self.joined.clear()

    async def _on_event(
        self,
        client: SfuClient,
        captioner: RoomCaptioner,
        event: ClientEvent,
        consumers: dict[str, asyncio.Task[None]],
    ) -> None:
        participant = event.participant
        if (
            event.type == "track"
            and event.track is not None
            and event.track.kind == "audio"
            and participant is not None
        ):
            old = consumers.pop(participant.identity, None)
            if old is not None:  # a new track of the same person: a fresh stream
                old.cancel()
                await captioner.participant_left(participant.identity)
            consumers[participant.identity] = asyncio.create_task(
                self._consume(captioner, participant, event.track)
            )
        elif event.type == "participant_updated" and participant is not None:
            captioner.set_muted(participant.identity, participant.name, participant.audio_muted)
        elif event.type == "participant_left":
            identity = str(
                event.data.get("identity") or (participant.identity if participant else "")
            )
            task = consumers.pop(identity, None)
            if task is not None:
                task.cancel()
            await captioner.participant_left(identity)
        if event.type in ("participant_joined", "participant_left"):
            captioner.set_participants(len(client.participants))

    async def _follow_state(self, captioner: RoomCaptioner, *, seen: int) -> None:
        """Applies every room state the hub sends (host on/off, language)."""
        while True:
            seen, state = await self.publisher.next_room_state(seen)
            await captioner.set_state(enabled=state.enabled, language=state.language)

    @staticmethod
    async def _consume(
        captioner: RoomCaptioner, participant: RemoteParticipant, track: RemoteTrack
    ) -> None:
        async for pcm, rate in track.pcm():
            captioner.audio(participant.identity, participant.name, pcm, rate)
        # The track ended (unpublished): the speaker's last words become final.
        await captioner.participant_left(participant.identity)
