"""Rooms: who is in them and what they publish.

Rooms are created on first join and forgotten when the last participant leaves. A room
only holds state and decides who must hear about a change; media and sockets live in
:mod:`sfu.peer` and :mod:`sfu.server`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from common.exceptions import RoomFullError

if TYPE_CHECKING:
    from sfu.peer import Peer


class Room:
    def __init__(self, name: str, *, max_participants: int = 100) -> None:
        self.name = name
        self.max_participants = max_participants
        self.peers: dict[str, Peer] = {}

    def add(self, peer: Peer) -> Peer | None:
        """Adds ``peer``; returns the peer it replaces (same identity), if any."""
        replaced = self.peers.pop(peer.identity, None)
        if replaced is None and len(self.peers) >= self.max_participants:
            raise RoomFullError(f"room {self.name!r} is full")
        self.peers[peer.identity] = peer
        return replaced

    def remove(self, peer: Peer) -> bool:
        if self.peers.get(peer.identity) is peer:
            del self.peers[peer.identity]
            return True
        return False

    def others(self, peer: Peer) -> Iterator[Peer]:
        return (p for p in self.peers.values() if p is not peer)

    def visible_others(self, peer: Peer) -> list[dict[str, Any]]:
        return [p.describe() for p in self.others(peer) if not p.grants.hidden]

    def broadcast(self, message: dict[str, Any], *, exclude: Peer | None = None) -> None:
        for p in list(self.peers.values()):
            if p is not exclude:
                p.send(message)

    @property
    def empty(self) -> bool:
        return not self.peers


class Rooms:
    """Every live room, by name."""

    def __init__(self, *, max_participants: int = 100) -> None:
        self._rooms: dict[str, Room] = {}
        self._max_participants = max_participants

    def get_or_create(self, name: str) -> Room:
        room = self._rooms.get(name)
        if room is None:
            room = self._rooms[name] = Room(name, max_participants=self._max_participants)
        return room

    def get(self, name: str) -> Room | None:
        return self._rooms.get(name)

    def discard_if_empty(self, room: Room) -> None:
        if room.empty and self._rooms.get(room.name) is room:
            del self._rooms[room.name]

    def __iter__(self) -> Iterator[Room]:
        return iter(list(self._rooms.values()))

    def __len__(self) -> int:
        return len(self._rooms)
