"""Engine registry. Engines load lazily so that importing the core stays cheap.

Each engine module exposes ``load(options) -> Engine`` and
``available_models() -> list[ModelListing]`` (for ``captions models``); one that reads
``EngineOptions.settings`` says so with ``TAKES_SETTINGS = True``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from types import ModuleType

from captions.engine import Engine
from common.exceptions import ConfigError, UnknownEngineError

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
    kyutai_urls: tuple[str, ...] = ()
    """Every ASR server of a kyutai-remote pool (``kyutai_url`` is the first)."""
    kyutai_api_key: str | None = None
    settings: dict[str, str] = field(default_factory=dict)
    """Engine tunables by name (``--setting NAME=VALUE``); an engine refuses names it
    does not know with ConfigError."""


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
    options = options or EngineOptions()
    module = _module(name)
    if options.settings and not getattr(module, "TAKES_SETTINGS", False):
        raise ConfigError(f"engine {name} has no tunables for --setting")
    engine: Engine = module.load(options)
    return engine


def list_models() -> list[ModelListing]:
    listings: list[ModelListing] = []
    for name in _MODULES:
        try:
            listings.extend(_module(name).available_models())
        except ImportError as exc:
            listings.append(ModelListing(name, "-", "-", False, f"not installed: {exc}"))
    return listings
