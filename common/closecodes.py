"""WebSocket close codes of every socket the project serves: signalling (``/ws``),
``/captions``, ``/captions/publish`` and Kyutai's ``/api/asr-streaming``; defined once, here.

The SFU and the meeting layer both import this leaf module; the meeting page gets the
same values from ``meeting/static/closecodes.js``, which a test checks against this enum
(``tests/test_captions_protocol.py``). Codes 4xxx mirror HTTP statuses where they can
(4401 unauthorized, 4403 forbidden, 4408 timeout, 4409 conflict, 4410 gone, 4429 too many).
"""

from __future__ import annotations

from enum import IntEnum


class CloseCode(IntEnum):
    NORMAL = 1000
    GOING_AWAY = 1001  # the server is stopping
    POLICY_VIOLATION = 1008  # the peer does not read what it is sent
    TOO_BIG = 1009  # a frame over the size limit
    MEDIA_FAILED = 4000  # a client (page, SfuClient) gives up a connection whose media failed
    TOO_SLOW = 4008  # /captions: the reader left too many finals unread
    PROTOCOL = 4400
    UNAUTHORIZED = 4401  # token_missing, token_invalid, token_expired
    FORBIDDEN = 4403  # wrong_room, forbidden
    TIMEOUT = 4408  # no join (signalling) or auth (/captions) message in time
    REPLACED = 4409  # the same identity joined again elsewhere
    MEDIA_LOST = 4410  # the SFU saw this participant's media connection fail: it left; rejoin
    ROOM_FULL = 4429


# Refusals of the token itself: reconnecting with the same token cannot help.
REFUSED = frozenset({CloseCode.UNAUTHORIZED, CloseCode.FORBIDDEN})

_BY_AUTH_CODE = {
    "token_missing": CloseCode.UNAUTHORIZED,
    "token_invalid": CloseCode.UNAUTHORIZED,
    "token_expired": CloseCode.UNAUTHORIZED,
    "wrong_room": CloseCode.FORBIDDEN,
    "forbidden": CloseCode.FORBIDDEN,
    "room_full": CloseCode.ROOM_FULL,
}


def close_code_for(auth_code: str) -> CloseCode:
    """The close code that follows a refused token, by the error's stable ``code``."""
    return _BY_AUTH_CODE.get(auth_code, CloseCode.UNAUTHORIZED)
