"""Live captions core: caption events, the streaming engine interface and its runtime."""

from captions.events import CaptionEvent, Speaker, Word

__all__ = ["CaptionEvent", "Speaker", "Word"]
