// WebSocket close codes of /ws (signalling), /captions and /captions/publish. The one
// definition is common/closecodes.py; tests/test_captions_protocol.py fails if these differ.

export const CloseCode = Object.freeze({
  NORMAL: 1000,
  GOING_AWAY: 1001,
  POLICY_VIOLATION: 1008,
  TOO_BIG: 1009,
  MEDIA_FAILED: 4000,
  TOO_SLOW: 4008,
  PROTOCOL: 4400,
  UNAUTHORIZED: 4401,
  FORBIDDEN: 4403,
  TIMEOUT: 4408,
  REPLACED: 4409,
  MEDIA_LOST: 4410,
  ROOM_FULL: 4429,
});

// Refusals of the token itself: reconnecting with the same token cannot help.
export const REFUSED = new Set([CloseCode.UNAUTHORIZED, CloseCode.FORBIDDEN]);

// Close codes after which reconnecting with the same link cannot help (signalling).
export const FATAL = new Set([
  CloseCode.NORMAL,
  CloseCode.PROTOCOL,
  CloseCode.UNAUTHORIZED,
  CloseCode.FORBIDDEN,
  CloseCode.REPLACED,
  CloseCode.ROOM_FULL,
]);

/** The error (an i18n key suffix) a refusing close code stands for. */
export function closeError(code) {
  return (
    {
      [CloseCode.UNAUTHORIZED]: "token_invalid",
      [CloseCode.FORBIDDEN]: "wrong_room",
      [CloseCode.ROOM_FULL]: "room_full",
      [CloseCode.REPLACED]: "replaced",
    }[code] || "connection_failed"
  );
}
