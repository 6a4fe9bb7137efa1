from __future__ import annotations

from pathlib import Path

import pytest

from tests.speech import SHARED_EVAL


@pytest.fixture(scope="session")
def shared_eval() -> Path:
    """Real human speech with references; skips visibly where ../shared/eval is absent."""
    if not (SHARED_EVAL / "README.md").exists():
        pytest.skip(
            f"real speech sets not found at {SHARED_EVAL} (present in CI, not in a fresh clone)"
        )
    return SHARED_EVAL
