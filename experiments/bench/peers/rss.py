"""Resident-memory readings shared by the benchmark workers on both sides (fade's environment and
the peer's own venv): standard library only, so the peer worker can import it without fade."""

from __future__ import annotations

import re
from pathlib import Path


def status_mib(field: str = "VmHWM") -> float | None:
    """Peak (VmHWM) or current (VmRSS) resident memory of this process, MiB; None off Linux."""
    try:
        match = re.search(rf"{field}:\s+(\d+)\s+kB", Path("/proc/self/status").read_text())
    except OSError:
        return None
    return round(int(match.group(1)) / 1024, 1) if match else None


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (Linux >= 4.0); False where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False
