"""Engine registry. Engines load lazily so that importing the core stays cheap.

Each engine module exposes ``load(options) -> Engine`` and
``available_models() -> list[ModelListing]`` (for ``captions models``).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType

from captions.engine import Engine
from common.exceptions import UnknownEngineError

DEFAULT_ENGINE = "whisper"

# name -> module implementing it
_MODULES: dict[str, str] = {
    "whisper": "captions.engines.whisper",
    "kyutai": "captions.engines.kyutai",
    "kyutai-remote": "captions.engines.kyutai_remote",
}


@dataclass
class EngineOptions:
    """Every engine's options; each engine reads the ones it understands."""

    model: str | None = None
    """Path to model weights (or a Hugging Face repo id, resolved offline, for kyutai)."""
    language: str | None = None
    device: str = "auto"
    max_streams: int | None = None
    kyutai_url: str | None = None
    kyutai_api_key: str | None = None


@dataclass(frozen=True)
class ModelListing:
    engine: str
    model: str
    location: str
    available: bool
    note: str = ""
    languages: str = ""
    """What the model transcribes, e.g. "en" or "99 (multilingual)"."""


def engine_names() -> list[str]:
    return list(_MODULES)


def _module(name: str) -> ModuleType:
    try:
        module_name = _MODULES[name]
    except KeyError:
        known = ", ".join(_MODULES)
        raise UnknownEngineError(f"unknown engine {name!r} (known: {known})") from None
    return importlib.import_module(module_name)


def create_engine(name: str, options: EngineOptions | None = None) -> Engine:
    """Loads engine ``name``. Raises UnknownEngineError or ModelNotFoundError."""
    engine: Engine = _module(name).load(options or EngineOptions())
    return engine


def list_models() -> list[ModelListing]:
    listings: list[ModelListing] = []
    for name in _MODULES:
        try:
            listings.extend(_module(name).available_models())
        except ImportError as exc:
            listings.append(ModelListing(name, "-", "-", False, f"not installed: {exc}"))
    return listings
