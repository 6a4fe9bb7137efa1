"""Bounded asyncio stop paths: end a task, or wait for a close, without hanging forever.

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
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Any

log = logging.getLogger(__name__)


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
