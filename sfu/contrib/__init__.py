"""Helpers for tests and tools, apart from the SFU core (as aiortc keeps contrib/media.py)."""
