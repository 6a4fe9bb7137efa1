from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from hypothesis import settings

from tests.speech import SHARED_EVAL
from tests.teardown_timeout import pytest_runtest_teardown  # noqa: F401 (a hook)

if TYPE_CHECKING:
    from evaluation.services import PostgresServer

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


# -- real services (evaluation.services), started here, never mocked ---------------------


def require_services(*packages: str) -> None:
    """Skips visibly when a service's Debian package is absent (scripts/system-deps.sh)."""
    from evaluation.services import missing_services

    missing = [p for p in missing_services() if p in packages]
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)} (scripts/system-deps.sh installs it)")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One PostgreSQL 15 for the session; tests get their own database (postgres_url)."""
    require_services("postgresql")
    from evaluation.services import PostgresServer

    with PostgresServer() as server:
        yield server


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """A fresh, empty database on the session's PostgreSQL."""
    import psycopg

    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_server.url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return postgres_server.url.rsplit("/", 1)[0] + f"/{name}"
