"""The HTTP security headers every response carries (page, API, WebSocket upgrades).

Pure policy, no server code: the SFU's app (``sfu.server``) and the standalone ASR server
(``captions.asr_server``) each apply :func:`security_headers` in aiohttp's
``on_response_prepare``, so no route can forget them.

- ``Content-Security-Policy``: the meeting page loads only its own files (ES modules, no
  inline script or style), talks only to its own origin over fetch and WebSocket
  (``connect-src 'self'`` plus the same host's ``ws:``/``wss:`` URL, spelled out for
  browsers that do not count WebSockets as 'self'), may not be framed
  (``frame-ancestors 'none'``), and everything else is refused (``default-src 'none'``).
  Camera/microphone previews use ``srcObject`` and transcript downloads ``blob:`` URLs.
- ``X-Frame-Options: DENY`` for browsers without frame-ancestors.
- ``X-Content-Type-Options: nosniff``; ``Referrer-Policy: no-referrer`` (join links carry
  their token in the fragment, but no URL of a meeting should leak anywhere).
- ``Permissions-Policy``: camera, microphone and display capture for this origin only.
- ``Strict-Transport-Security`` only when served over TLS.
- ``Server`` names the product, never a version.
"""

from __future__ import annotations

import re

SERVER_NAME = "sovereign-captions"
HSTS_SECONDS = 180 * 24 * 3600
_HOST = re.compile(r"^[A-Za-z0-9.-]+(:[0-9]{1,5})?$|^\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?$")


def content_security_policy(host: str | None, *, tls: bool) -> str:
    """The page's CSP; ``host`` (the request's Host header) names its WebSocket origin."""
    connect = ["'self'"]
    if host and _HOST.match(host):  # never echo a malformed Host into the header
        connect.append(f"wss://{host}")
        if not tls:
            connect.append(f"ws://{host}")
    return "; ".join(
        [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self' data: blob:",
            "media-src 'self' blob:",
            "font-src 'self'",
            f"connect-src {' '.join(connect)}",
            "base-uri 'none'",
            "form-action 'self'",
            "frame-ancestors 'none'",
            "object-src 'none'",
        ]
    )


def security_headers(host: str | None, *, tls: bool) -> dict[str, str]:
    """Every header of the module docstring, for one response."""
    headers = {
        "Content-Security-Policy": content_security_policy(host, tls=tls),
        "X-Frame-Options": "DENY",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Permissions-Policy": "camera=(self), microphone=(self), display-capture=(self)",
        "Cross-Origin-Opener-Policy": "same-origin",
        "Server": SERVER_NAME,
    }
    if tls:
        headers["Strict-Transport-Security"] = f"max-age={HSTS_SECONDS}"
    return headers
