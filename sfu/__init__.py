"""In-tree selective forwarding unit (SFU) on aiortc, with signed room tokens.

Modules: :mod:`sfu.settings` (configuration and the shared secret), :mod:`sfu.tokens`
(room tokens), :mod:`sfu.signalling` (sans-I/O signalling messages), :mod:`sfu.room`
(rooms and participants), :mod:`sfu.forwarding` (encoded-frame relay without transcoding),
:mod:`sfu.peer` (one participant's WebRTC connections), :mod:`sfu.server` (aiohttp app),
:mod:`sfu.client` (a Python participant for bots, benchmarks and the captioning sidecar)
and :mod:`evaluation.sfu_bench` (the forwarding benchmark). The wire protocol is documented in
``docs/signalling.md``.
"""
