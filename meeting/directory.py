"""Nodes and the room directory of a cluster, in Redis (``captions serve --redis``).

Keys (``prefix`` = ``captions`` by default):

- ``{prefix}:node:{id}``: the node's heartbeat, a JSON :class:`NodeInfo` (public URL,
  load, draining) written every ``heartbeat_seconds`` with a TTL of ``ttl_seconds``. A
  node is *live* while this key exists: a killed node disappears ``ttl_seconds`` after
  its last heartbeat at most.
- ``{prefix}:room:{room}``: the id of the node that holds the room, expiring
  ``room_ttl_seconds`` after its node last saw it live (refreshed by every heartbeat), so
  the keys of rooms whose node died do not stay for ever.
- ``{prefix}:rooms-of:{id}``: the set of rooms placed on a node (its load for placement,
  exact at once, unlike the heartbeat's).
- ``{prefix}:since``: when this Redis first saw a heartbeat. For one heartbeat TTL after
  that (a Redis restarted empty), rooms without a live owner are not placed yet
  (:class:`~common.exceptions.DirectoryUnavailableError`, the lookup answers 503 and the
  client asks again): the live nodes re-claim their rooms first, so a live room never
  ends up on two nodes.

Placement (:meth:`RoomDirectory.place`, one Lua script, so atomic in Redis): the room's
owner if it is live; else the room is set (first caller wins, as ``SET NX``) to the
least-loaded live node that is not draining, taking it over from a dead owner in the
same step. A room stays on its node while it lives; the node releases it when it ends
(compare-and-delete: only the owner can). A node re-claims its live rooms at every
heartbeat (``SET NX``), so a Redis restart without persistence loses nothing for long.

While Redis is unreachable the node keeps serving its rooms (routing does not need
Redis, see docs/scaling.md), reports not-ready, and cannot place new rooms
(:class:`~common.exceptions.DirectoryUnavailableError`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, replace

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from common.aio import cancel_and_wait
from common.exceptions import DirectoryUnavailableError, PlacementError

log = logging.getLogger(__name__)

# KEYS: room key, "since" key. ARGV: node key prefix, rooms-of prefix, room, warm-up
# seconds, room key TTL, candidate node ids in order of preference (heartbeat load).
# The live candidate with the fewest placed rooms wins, counted inside the script so
# that rooms placed at the same moment spread over the nodes. Returns the owner; "" while the
# directory is younger than the warm-up (live nodes have not all re-claimed their rooms
# yet); nil when no candidate is live.
_PLACE = """
local owner = redis.call('GET', KEYS[1])
if owner and redis.call('EXISTS', ARGV[1] .. owner) == 1 then
  return owner
end
local now = tonumber(redis.call('TIME')[1])
local since = tonumber(redis.call('GET', KEYS[2]) or now)
if now - since < tonumber(ARGV[4]) then
  return ''
end
local best, fewest = nil, nil
for i = 6, #ARGV do
  if redis.call('EXISTS', ARGV[1] .. ARGV[i]) == 1 then
    local placed = redis.call('SCARD', ARGV[2] .. ARGV[i])
    if best == nil or placed < fewest then
      best, fewest = ARGV[i], placed
    end
  end
end
if best == nil then
  return false
end
if owner then redis.call('SREM', ARGV[2] .. owner, ARGV[3]) end
redis.call('SET', KEYS[1], best, 'EX', tonumber(ARGV[5]))
redis.call('SADD', ARGV[2] .. best, ARGV[3])
return best
"""

# KEYS: "since" key. Records when this Redis first saw a heartbeat (its clock, seconds).
_MARK_SINCE = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('SET', KEYS[1], redis.call('TIME')[1])
end
return 1
"""

# KEYS: room key, rooms-of key of this node. ARGV: node id, room.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
end
redis.call('SREM', KEYS[2], ARGV[2])
return 1
"""


@dataclass(frozen=True)
class NodeInfo:
    id: str
    url: str
    rooms: int = 0
    participants: int = 0
    speakers: int = 0
    cpu: float = 0.0
    """Share of one core the node's process used since its previous heartbeat."""
    draining: bool = False
    placed: int = 0
    """Rooms the directory has placed on it (exact; the others are as of the heartbeat)."""

    def load(self) -> tuple[float, ...]:
        """Placement order: fewest placed rooms, then captioned speakers, participants."""
        return (self.placed, self.speakers, self.participants, self.cpu)


@dataclass(frozen=True)
class NodeLoad:
    rooms: int = 0
    participants: int = 0
    speakers: int = 0


class RoomDirectory:
    def __init__(
        self,
        redis_url: str,
        node_id: str,
        public_url: str,
        *,
        load: Callable[[], NodeLoad] = NodeLoad,
        live_rooms: Callable[[], Iterable[str]] = tuple,
        heartbeat_seconds: float = 1.0,
        ttl_seconds: float = 3.0,
        timeout_seconds: float = 2.0,
        room_ttl_seconds: int = 3600,
        prefix: str = "captions",
    ) -> None:
        if ttl_seconds <= heartbeat_seconds:
            raise ValueError("the heartbeat TTL must be longer than the heartbeat interval")
        self.node = NodeInfo(node_id, public_url.rstrip("/"))
        self.load = load
        self.live_rooms = live_rooms
        self.heartbeat_seconds = heartbeat_seconds
        self.ttl_seconds = ttl_seconds
        self.prefix = prefix
        self.room_ttl_seconds = room_ttl_seconds
        self.draining = False
        self.heartbeat_failures = 0
        self._redis = aioredis.Redis.from_url(
            redis_url,
            socket_timeout=timeout_seconds,
            socket_connect_timeout=timeout_seconds,
            decode_responses=True,
        )
        self._place = self._redis.register_script(_PLACE)
        self._release = self._redis.register_script(_RELEASE)
        self._mark_since = self._redis.register_script(_MARK_SINCE)
        self._task: asyncio.Task[None] | None = None
        self._cpu_mark = (time.monotonic(), time.process_time())

    # -- keys -----------------------------------------------------------------------------

    def _node_key(self, node_id: str = "") -> str:
        return f"{self.prefix}:node:{node_id}"

    def _room_key(self, room: str) -> str:
        return f"{self.prefix}:room:{room}"

    def _rooms_of(self, node_id: str = "") -> str:
        return f"{self.prefix}:rooms-of:{node_id}"

    def _since_key(self) -> str:
        return f"{self.prefix}:since"

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Registers the node (raises DirectoryUnavailableError if Redis does not answer),
        then keeps its heartbeat in the background."""
        try:  # a node id starting again holds no room yet: forget its previous life's count
            await self._redis.delete(self._rooms_of(self.node.id))
        except (RedisError, OSError) as exc:
            raise DirectoryUnavailableError(f"Redis: {exc}") from exc
        await self.heartbeat()
        self._task = asyncio.create_task(self._beat_forever())

    async def aclose(self, *, deregister: bool = True) -> None:
        await cancel_and_wait(self._task)
        self._task = None
        if deregister:
            try:
                await self._redis.delete(self._node_key(self.node.id))
            except RedisError as exc:
                log.info("could not deregister from the directory: %s", exc)
        await self._redis.aclose()

    async def _beat_forever(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_seconds)
            try:
                await self.heartbeat()
            except DirectoryUnavailableError as exc:
                self.heartbeat_failures += 1
                log.warning("room directory: %s", exc)

    async def heartbeat(self) -> None:
        """Writes this node's info with its TTL and re-claims its live rooms."""
        load = self.load()
        now, cpu = time.monotonic(), time.process_time()
        then, cpu_then = self._cpu_mark
        self._cpu_mark = (now, cpu)
        info = replace(
            self.node,
            rooms=load.rooms,
            participants=load.participants,
            speakers=load.speakers,
            cpu=round((cpu - cpu_then) / (now - then), 3) if now > then else 0.0,
            draining=self.draining,
        )
        try:
            # One transaction: the node becomes live together with the claims of its rooms.
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.set(
                    self._node_key(self.node.id),
                    json.dumps(asdict(info)),
                    px=int(self.ttl_seconds * 1000),
                )
                for room in self.live_rooms():
                    pipe.set(self._room_key(room), self.node.id, nx=True)
                    pipe.expire(self._room_key(room), self.room_ttl_seconds)
                    pipe.sadd(self._rooms_of(self.node.id), room)
                await pipe.execute()
            await self._mark_since(keys=[self._since_key()])
        except (RedisError, OSError) as exc:
            raise DirectoryUnavailableError(f"Redis: {exc}") from exc

    async def ping(self) -> str:
        try:
            await self._redis.ping()
        except (RedisError, OSError) as exc:
            raise DirectoryUnavailableError(f"Redis: {exc}") from exc
        return "ok"

    # -- nodes and rooms -----------------------------------------------------------------

    async def nodes(self) -> list[NodeInfo]:
        """Live nodes, least loaded first (draining ones included)."""
        try:
            keys = [k async for k in self._redis.scan_iter(match=self._node_key("*"))]
            values = await self._redis.mget(keys) if keys else []
            infos = [NodeInfo(**json.loads(v)) for v in values if v]
            counts = await asyncio.gather(*(self._redis.scard(self._rooms_of(i.id)) for i in infos))
        except (RedisError, OSError) as exc:
            raise DirectoryUnavailableError(f"Redis: {exc}") from exc
        nodes = [replace(info, placed=int(n)) for info, n in zip(infos, counts, strict=True)]
        return sorted(nodes, key=NodeInfo.load)

    async def place(self, room: str) -> NodeInfo:
        """The node holding ``room``, placing it on the least-loaded live node if none does.

        Raises PlacementError when no live node takes new rooms."""
        nodes = await self.nodes()
        by_id = {n.id: n for n in nodes}
        candidates = [n.id for n in nodes if not n.draining]
        owner = await self._run_placement(room, math.ceil(self.ttl_seconds) + 1, candidates)
        if owner == "":
            raise DirectoryUnavailableError("the directory is warming up after a restart")
        if not owner:
            raise PlacementError("no live node takes new rooms")
        return by_id.get(owner) or NodeInfo(owner, "")

    async def owner(self, room: str) -> str | None:
        try:
            value = await self._redis.get(self._room_key(room))
        except (RedisError, OSError) as exc:
            raise DirectoryUnavailableError(f"Redis: {exc}") from exc
        return str(value) if value else None

    async def claim(self, room: str) -> str:
        """Records ``room`` as this node's unless a live node holds it; returns the owner."""
        owner = await self._run_placement(room, 0, [self.node.id])
        return str(owner) if owner else self.node.id

    async def _run_placement(
        self, room: str, warmup_seconds: int, candidates: list[str]
    ) -> str | None:
        """One call of the atomic placement script; ``warmup_seconds`` 0 claims at once."""
        try:
            owner = await self._place(
                keys=[self._room_key(room), self._since_key()],
                args=[
                    self._node_key(),
                    self._rooms_of(),
                    room,
                    warmup_seconds,
                    self.room_ttl_seconds,
                    *candidates,
                ],
            )
        except (RedisError, OSError) as exc:
            raise DirectoryUnavailableError(f"Redis: {exc}") from exc
        return None if owner is None else str(owner)

    async def release(self, room: str) -> None:
        """Forgets ``room`` if this node holds it (it ended here)."""
        try:
            await self._release(
                keys=[self._room_key(room), self._rooms_of(self.node.id)],
                args=[self.node.id, room],
            )
        except (RedisError, OSError) as exc:
            raise DirectoryUnavailableError(f"Redis: {exc}") from exc


def default_node_id() -> str:
    return f"{os.uname().nodename}-{os.getpid()}"
