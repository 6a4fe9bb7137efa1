"""A failed test whose teardown hangs is still stopped by its timeout (see
tests/teardown_timeout.py): run in a child pytest, bounded."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parent.parent

STUCK = """
import asyncio
import pytest

async def stubborn() -> None:
    while True:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            pass  # survives the loop teardown's cancellation

@pytest.mark.timeout(3)
async def test_fails_and_leaves_a_stubborn_task() -> None:
    asyncio.get_running_loop().create_task(stubborn())
    await asyncio.sleep(0.05)
    assert False, "the test itself fails"

def test_after() -> None:
    pass
"""


@pytest.mark.timeout(90)
def test_a_failed_tests_hung_teardown_is_timed_out(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    pytester.makepyfile(test_stuck=STUCK)
    pytester.makeini(
        "[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n"
    )
    result = pytester.runpytest_subprocess(
        "-p", "tests.teardown_timeout", "-p", "no:cacheprovider", timeout=60
    )
    result.assert_outcomes(failed=1, passed=1, errors=1)
    result.stdout.fnmatch_lines(["*Timeout (>3.0s)*"])
