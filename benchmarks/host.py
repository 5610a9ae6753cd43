"""Facts of the machine a benchmark ran on, for its report."""

from __future__ import annotations

import platform
from pathlib import Path


def cpu_model() -> str:
    """``Model name`` from /proc/cpuinfo (what ``lscpu`` shows), else the platform's processor string."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"
