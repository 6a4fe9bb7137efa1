from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import settings

from tests.speech import SHARED_EVAL

# Property tests explore new random inputs on every developer run; CI replays a fixed
# sequence so a landing never depends on luck. A failure found locally becomes an
# @example, so CI checks it from then on.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


@pytest.fixture(scope="session")
def shared_eval() -> Path:
    """Real human speech with references; skips visibly where ../shared/eval is absent."""
    if not (SHARED_EVAL / "README.md").exists():
        pytest.skip(
            f"real speech sets not found at {SHARED_EVAL} (present in CI, not in a fresh clone)"
        )
    return SHARED_EVAL
