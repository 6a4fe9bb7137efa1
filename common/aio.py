"""Bounded asyncio helpers: stop paths that cannot hang, and the one reconnect policy.

:class:`Backoff` is the Python side's one reconnect policy (the page's is
``meeting/static/reconnect.js``, with the same rule): capped exponential backoff with
jitter, bounded if asked, reset after a success.

Stop paths: end a task, or wait for a close, without hanging forever.

Two rules keep shutdown from hanging (a task that survives cancellation blocks
``asyncio.run`` and pytest's loop teardown for ever):

- never swallow the *caller's* cancellation: ``task.cancel(); with
  suppress(CancelledError): await task`` also eats a cancel aimed at the awaiting task,
  which then keeps running; here the awaited task's end is observed with
  :func:`asyncio.wait`, which never raises the awaited task's ``CancelledError``, so a
  ``CancelledError`` reaching the caller is always its own and propagates;
- bound every wait on the stop path: a peer that never answers a close, or a library
  close that never resolves (aiortc's ``RTCPeerConnection.close()`` waits for ever when
  an earlier close was interrupted), costs at most ``timeout`` and a warning.

A loop that retries for ever (storing a final while the database is down) also checks
:func:`raise_if_cancelled_since` on each turn: a library may lose a cancellation (on
Python 3.11 ``asyncio.wait_for`` returns the inner result when the cancel arrives just as
it completes; psycopg_pool waits through it), and the task would then retry, or wait for
the next item, for ever while marked "cancelling": ``asyncio.run`` and pytest's loop
teardown cancel once and wait without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

log = logging.getLogger(__name__)


def cancel_requests() -> int:
    """The current task's pending cancellation requests (``Task.cancelling()``), or 0."""
    task = asyncio.current_task()
    return task.cancelling() if task is not None else 0


def raise_if_cancelled_since(before: int) -> None:
    """Raises ``CancelledError`` if the current task was cancelled since ``before`` (a
    :func:`cancel_requests` value) and the cancellation was swallowed on the way."""
    if cancel_requests() > before:
        raise asyncio.CancelledError


async def cancel_and_wait(task: asyncio.Future[Any] | None, *, timeout: float = 5.0) -> bool:
    """Cancels ``task`` and waits at most ``timeout`` seconds for it to end.

    Returns whether it ended. Its result or exception is consumed (an exception is
    logged at debug level: connection errors are usual while stopping); the caller's
    own cancellation propagates.
    """
    if task is None:
        return True
    if not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=timeout)
    if not task.done():
        log.warning("%r did not end within %.1f s of being cancelled", task, timeout)
        return False
    if not task.cancelled() and task.exception() is not None:
        log.debug("%r failed while stopping", task, exc_info=task.exception())
    return True


async def wait_ended(task: asyncio.Future[Any], *, timeout: float) -> bool:
    """Waits at most ``timeout`` seconds for ``task`` to end by itself, else cancels it.

    Returns whether it ended by itself; see :func:`cancel_and_wait` for the rest.
    """
    await asyncio.wait({task}, timeout=timeout)
    ended = task.done()
    await cancel_and_wait(task, timeout=timeout)
    return ended


async def bounded(awaitable: Awaitable[Any], *, timeout: float, what: str) -> bool:
    """Awaits ``awaitable`` (a close, typically) for at most ``timeout`` seconds.

    Returns whether it completed; a timeout or an ordinary exception is logged and
    swallowed (it is on a stop path), cancellation of the caller is not.
    """
    try:
        async with asyncio.timeout(timeout):
            await awaitable
    except TimeoutError:
        log.warning("%s did not finish within %.1f s; going on", what, timeout)
        return False
    except Exception as exc:  # a failed close must not stop the rest of the shutdown
        log.debug("%s failed: %s", what, exc)
        return False
    return True


class Backoff:
    """Capped exponential backoff with jitter, reset after a success.

    The delay before retry ``n`` (from 0) is drawn in ``[(1 - jitter) * d, d]`` with
    ``d = min(cap, base * 2**n)``: jitter spreads the reconnects of many clients after a
    server restart, and never makes a wait longer. After ``max_attempts`` retries since
    the last :meth:`reset`, :meth:`next_delay` returns None (give up). Typical use::

        backoff = Backoff(base=0.5, cap=10.0)
        async for _ in backoff.attempts(stop=stopping):
            try:
                connection = await connect()
            except OSError:
                continue          # waits, then tries again
            backoff.reset()       # connected: the next failure starts from ``base``
            await serve(connection)
    """

    def __init__(
        self,
        *,
        base: float = 0.5,
        cap: float = 10.0,
        jitter: float = 0.5,
        max_attempts: int | None = None,
        random: Callable[[], float] = random.random,
    ) -> None:
        if not (base > 0 and cap >= base and 0 <= jitter <= 1):
            raise ValueError("backoff: need 0 < base <= cap and 0 <= jitter <= 1")
        if max_attempts is not None and max_attempts < 0:
            raise ValueError("backoff: max_attempts must be >= 0")
        self.base, self.cap, self.jitter = base, cap, jitter
        self.max_attempts = max_attempts
        self._random = random
        self.failures = 0  # retries since the last reset

    def next_delay(self) -> float | None:
        """Seconds to wait before the next retry, or None once the attempts are used up."""
        if self.max_attempts is not None and self.failures >= self.max_attempts:
            return None
        ceiling = min(self.cap, self.base * 2.0 ** min(self.failures, 64))
        self.failures += 1
        return ceiling * (1.0 - self.jitter * self._random())

    def reset(self) -> None:
        self.failures = 0

    async def attempts(self, *, stop: asyncio.Event | None = None) -> AsyncIterator[int]:
        """Yields attempt numbers: the first at once, each later one after the next delay.

        Ends when ``stop`` is set (also during a wait, which it cuts short) or when the
        attempts are used up.
        """
        attempt = 0
        while stop is None or not stop.is_set():
            yield attempt
            delay = self.next_delay()
            if delay is None:
                return
            if stop is None:
                await asyncio.sleep(delay)
            else:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await stop.wait()
            attempt += 1
