"""Leaf shared by every layer: the one exception hierarchy and bounded asyncio helpers."""
