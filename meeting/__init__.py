"""The meeting layer: the only code that knows both the SFU and the caption core.

The captioner that follows a room, the caption publisher, the sidecar process, the per-room
hub, the transcript store, the captions API, the meeting page and the assembled app.
"""
