"""common.aio.Backoff: the Python side's one reconnect policy (capped, jittered, bounded,
reset after success), the same rule as the page's reconnect.js."""

from __future__ import annotations

import asyncio
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.aio import Backoff


def test_delays_double_up_to_the_cap_without_jitter() -> None:
    backoff = Backoff(base=0.5, cap=3.0, jitter=0.0)
    assert [backoff.next_delay() for _ in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    backoff.reset()
    assert backoff.next_delay() == 0.5  # a success starts again from the base


@given(
    base=st.floats(0.01, 5.0),
    factor=st.floats(1.0, 100.0),
    jitter=st.floats(0.0, 1.0),
    draws=st.lists(st.floats(0.0, 1.0, exclude_max=True), min_size=1, max_size=40),
)
def test_jitter_only_ever_shortens_a_delay(
    base: float, factor: float, jitter: float, draws: list[float]
) -> None:
    values = iter(draws)
    backoff = Backoff(base=base, cap=base * factor, jitter=jitter, random=lambda: next(values))
    for n, draw in enumerate(draws):
        delay = backoff.next_delay()
        ceiling = min(base * factor, base * 2.0**n)
        assert delay is not None
        assert ceiling * (1 - jitter) - 1e-9 <= delay <= ceiling + 1e-9
        assert delay == pytest.approx(ceiling * (1 - jitter * draw))


def test_bounded_attempts_give_up_and_reset_restores_them() -> None:
    backoff = Backoff(base=1.0, cap=1.0, max_attempts=2)
    assert backoff.next_delay() is not None and backoff.next_delay() is not None
    assert backoff.next_delay() is None
    backoff.reset()
    assert backoff.next_delay() is not None


@pytest.mark.parametrize(
    "options", [{"base": 0.0}, {"base": 2.0, "cap": 1.0}, {"jitter": 1.5}, {"max_attempts": -1}]
)
def test_nonsense_settings_are_refused(options: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Backoff(**options)  # type: ignore[arg-type]


async def test_attempts_wait_between_tries_and_stop_cuts_a_wait_short() -> None:
    backoff = Backoff(base=0.05, cap=0.05, jitter=0.0, max_attempts=3)
    started = time.monotonic()
    tries = [attempt async for attempt in backoff.attempts()]
    assert tries == [0, 1, 2, 3]  # the first try, then one per allowed retry
    assert time.monotonic() - started >= 0.15 - 0.01

    stop = asyncio.Event()
    slow = Backoff(base=60.0, cap=60.0, jitter=0.0)
    seen = []
    started = time.monotonic()
    async for attempt in slow.attempts(stop=stop):
        seen.append(attempt)
        asyncio.get_running_loop().call_later(0.05, stop.set)
    assert seen == [0] and time.monotonic() - started < 5.0
