"""A node's part in a cluster: its rooms in the :class:`~meeting.directory.RoomDirectory`,
and ``GET /rooms/{room}/node``, which any node answers.

``GET /rooms/{room}/node`` (token of that room, any role, in ``Authorization: Bearer``
or ``?token=``) places the room if needed and answers ``{"room", "node", "url",
"path"}``: ``path`` (``/n/<node id>``) is the prefix under which the entry point
(HAProxy, ``deploy/haproxy.cfg``) routes to that node, e.g. ``/n/node-1/ws``; pages may
use ``?node=<id>`` instead. A client asks again after losing its connection: when the
node died, the room is placed on a live one. Errors: 401/403 for the token, 503
``no_node`` when every node is draining, 503 ``directory_unavailable`` while Redis
does not answer.

A room opened on this node is claimed for it (a client that skipped the lookup, or a
Redis restart); a room that ends is released.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

from aiohttp import web

from common.exceptions import AuthError, DirectoryUnavailableError, PlacementError
from meeting.directory import NodeInfo, RoomDirectory
from sfu.room import Room
from sfu.server import SfuServer
from sfu.tokens import verify_token

log = logging.getLogger(__name__)

NODE_PATH_PREFIX = "/n/"


def node_path(node_id: str) -> str:
    return f"{NODE_PATH_PREFIX}{node_id}"


class Placement:
    def __init__(self, directory: RoomDirectory, secret: str) -> None:
        self.directory = directory
        self.secret = secret
        self._tasks: set[asyncio.Task[None]] = set()

    def install(self, app: web.Application, sfu: SfuServer) -> None:
        app.router.add_get("/rooms/{room}/node", self.lookup)
        sfu.on_room_opened.append(self._opened)
        sfu.on_room_idle.append(self._idle)

    async def lookup(self, request: web.Request) -> web.Response:
        room = request.match_info["room"]
        header = request.headers.get("Authorization", "")
        token = header[7:].strip() if header.lower().startswith("bearer ") else None
        try:
            verify_token(self.secret, token or request.query.get("token"), room=room)
            node = await self.directory.place(room)
        except AuthError as exc:
            return web.json_response({"error": exc.code}, status=exc.http_status)
        except PlacementError:
            return web.json_response({"error": "no_node"}, status=503)
        except DirectoryUnavailableError as exc:
            log.warning("placing %s: %s", room, exc)
            return web.json_response({"error": "directory_unavailable"}, status=503)
        return web.json_response(describe(room, node), headers={"Cache-Control": "no-store"})

    def _opened(self, room: Room) -> None:
        self._spawn(self._claim(room.name))

    def _idle(self, room: Room) -> None:
        self._spawn(self.directory.release(room.name))

    async def _claim(self, room: str) -> None:
        owner = await self.directory.claim(room)
        if owner != self.directory.node.id:
            log.warning("room %s opened here but node %s holds it", room, owner)

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        async def run() -> None:
            try:
                await coro
            except DirectoryUnavailableError as exc:
                log.warning("room directory: %s (the next heartbeat re-claims)", exc)

        task = asyncio.create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def describe(room: str, node: NodeInfo) -> dict[str, Any]:
    return {"room": room, "node": node.id, "url": node.url, "path": node_path(node.id)}
