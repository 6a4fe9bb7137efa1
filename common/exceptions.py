"""Every exception the project raises on purpose derives from :class:`CaptionsError`.

Hierarchy::

    CaptionsError
    ├── AudioError               bad audio input
    │   ├── AudioDecodeError     not audio, or a corrupt file
    │   └── EmptyAudioError      decodes to zero samples
    ├── EngineError
    │   ├── UnknownEngineError   no engine of that name
    │   ├── ModelNotFoundError   weights missing; the message says how to provision them
    │   ├── ModelIntegrityError  weights differ from their pinned SHA-256 digests (names the file)
    │   ├── UnsupportedLanguageError  the model cannot transcribe the requested language
    │   ├── CapacityError        every slot of the engine is taken ("no free channels")
    │   ├── EngineAuthError      a remote engine server refused our API key (not retried)
    │   └── StreamClosedError    audio pushed to a stream after it was closed
    ├── ConfigError              unusable settings (secret file, TLS options)
    ├── ServiceUnavailableError  a service the cluster depends on does not answer
    │   ├── StoreUnavailableError     the transcript database (SQLite file, PostgreSQL)
    │   └── DirectoryUnavailableError the room directory (Redis)
    ├── PlacementError           no live node can take a room (all draining or none alive)
    ├── StoreRejectedError       the transcript database refused a record for good (not retried)
    ├── ManifestError            an evaluation manifest line cannot be used (names the line)
    ├── UnknownFormatError       no transcript format of that name
    ├── ProtocolError            a peer sent something the protocol forbids
    │   ├── MessageTooLargeError over the configured size limit
    │   ├── MalformedMessageError not decodable, wrong field types
    │   │   └── UnknownMessageTypeError  a ``type`` the protocol does not define
    │   └── InvalidSdpError      a WebRTC session description that cannot be applied
    └── AuthError                room tokens; each has a stable ``code`` for clients
        ├── TokenMissingError    code "token_missing"
        ├── TokenInvalidError    code "token_invalid" (bad signature, malformed)
        ├── TokenExpiredError    code "token_expired"
        ├── WrongRoomError       code "wrong_room"
        ├── ForbiddenError       code "forbidden" (a host-only action by a non-host)
        └── RoomFullError        code "room_full" (the room's participant limit)
"""

from __future__ import annotations


class CaptionsError(Exception):
    """Root of every documented error in this project."""


class AudioError(CaptionsError):
    """Audio input cannot be used."""


class AudioDecodeError(AudioError):
    """The input is not decodable audio."""


class EmptyAudioError(AudioError):
    """The input decodes to no samples."""


class EngineError(CaptionsError):
    """A speech engine cannot do what was asked."""


class UnknownEngineError(EngineError):
    """No engine is registered under that name."""


class ModelNotFoundError(EngineError):
    """Model weights are not on this machine."""


class ModelIntegrityError(EngineError):
    """A pinned model's files do not match their published digests: never run them."""


class UnsupportedLanguageError(EngineError):
    """The model does not support the requested language (e.g. an English-only model)."""


class CapacityError(EngineError):
    """The engine has no free stream slot."""


class EngineAuthError(EngineError):
    """A remote engine server refused our credentials (HTTP 401/403 at the handshake).

    Not retried: a wrong key does not fix itself. The message names the server."""


class StreamClosedError(EngineError):
    """The stream was already closed."""


class ConfigError(CaptionsError):
    """The configuration cannot be used."""


class ServiceUnavailableError(CaptionsError):
    """A service this node depends on cannot be reached or failed; usually transient."""


class StoreUnavailableError(ServiceUnavailableError):
    """The transcript database cannot be reached or refused a statement."""


class DirectoryUnavailableError(ServiceUnavailableError):
    """The room directory (Redis) cannot be reached."""


class StoreRejectedError(CaptionsError):
    """The transcript database refused a record (its data, not its availability)."""


class PlacementError(CaptionsError):
    """No live node can take a new room (every node is draining, or none is alive)."""


class ManifestError(CaptionsError):
    """An evaluation manifest cannot be read."""


class UnknownFormatError(CaptionsError):
    """No transcript format is registered under that name."""


class ProtocolError(CaptionsError):
    """A peer violated a wire protocol."""


class MessageTooLargeError(ProtocolError):
    """A message exceeded the configured size limit."""


class MalformedMessageError(ProtocolError):
    """A message could not be decoded or has the wrong shape."""


class UnknownMessageTypeError(MalformedMessageError):
    """The message's ``type`` is not part of the protocol."""


class InvalidSdpError(ProtocolError):
    """A session description could not be parsed or applied."""


class AuthError(CaptionsError):
    """A room token was refused. ``code`` is stable and documented."""

    code = "auth_error"
    http_status = 401


class TokenMissingError(AuthError):
    code = "token_missing"


class TokenInvalidError(AuthError):
    code = "token_invalid"


class TokenExpiredError(AuthError):
    code = "token_expired"


class WrongRoomError(AuthError):
    code = "wrong_room"
    http_status = 403


class ForbiddenError(AuthError):
    code = "forbidden"
    http_status = 403


class RoomFullError(AuthError):
    code = "room_full"
    http_status = 403
