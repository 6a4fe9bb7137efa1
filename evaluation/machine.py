"""What the machine was doing during a measurement, recorded next to the figures.

Compute time is charged as wall time, so a machine busy with other work makes every
latency and RTF look worse; the load average says how much that was the case.
"""

from __future__ import annotations

import os
from typing import Any


def machine_state() -> dict[str, Any]:
    """CPU count and 1/5/15-minute load averages (runnable processes) right now."""
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:  # not available on this platform
        load = []
    return {"cpu_count": os.cpu_count(), "loadavg": load}
