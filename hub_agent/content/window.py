"""The sync window, read in the hub's local time (Africa/Lome), possibly wrapping midnight."""

from __future__ import annotations

from datetime import datetime, time, timedelta


def parse_window(window: str) -> tuple[time, time]:
    """ "22:00-06:00" -> (22:00, 06:00). The config model already checked the shape."""
    a, _, b = window.partition("-")
    try:
        ha, ma = (int(x) for x in a.split(":"))
        hb, mb = (int(x) for x in b.split(":"))
        return time(ha, ma), time(hb, mb)
    except ValueError:
        raise ValueError(f"sync_window: expected HH:MM-HH:MM, got {window!r}") from None


def in_window(window: str, local: datetime | time) -> bool:
    """True when ``local`` (wall-clock time at the hub) is inside [start, end).

    start == end means "always" (a hub whose uplink is never congested).
    """
    start, end = parse_window(window)
    t = local.time() if isinstance(local, datetime) else local
    t = t.replace(tzinfo=None)
    if start == end:
        return True
    if start < end:
        return start <= t < end
    return t >= start or t < end  # wraps midnight


def seconds_until_open(window: str, local: datetime) -> float:
    """0 when open, else seconds until the window next opens (wall clock)."""
    if in_window(window, local):
        return 0.0
    start, _ = parse_window(window)
    naive = local.replace(tzinfo=None)
    opening = datetime.combine(naive.date(), start)
    if opening <= naive:
        opening += timedelta(days=1)
    return (opening - naive).total_seconds()
