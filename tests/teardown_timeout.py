"""Keeps pytest-timeout's bound on a test's teardown after the test failed.

pytest-timeout (2.4) stops an item's timer in its ``pytest_exception_interact`` hook,
meant for entering pdb, but pytest calls that hook for every failed test; the teardown
of a failed test then runs with no timeout at all. A task that survives cancellation
makes pytest-asyncio's loop teardown (``Runner.close`` -> ``_cancel_all_tasks``) wait for
ever, and CI hung for the whole job on one failed test. This re-arms the item's timer
(a fresh ``timeout`` seconds, same method) for its teardown; loaded by tests/conftest.py.
"""

from __future__ import annotations

from collections.abc import Generator

import pytest
import pytest_timeout


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Generator[None, None, None]:
    settings = pytest_timeout._get_item_settings(item)
    armed = bool(settings.timeout) and settings.timeout > 0 and settings.func_only is False
    if armed:
        hook = item.config.pluginmanager.hook
        hook.pytest_timeout_cancel_timer(item=item)  # idempotent; a thread timer must not pile up
        hook.pytest_timeout_set_timer(item=item, settings=settings)
    yield  # pytest-timeout's pytest_runtest_protocol wrapper cancels it afterwards
