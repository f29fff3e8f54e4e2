"""Pure decisions over plain data: what to drop, what to fetch next, what to evict.

Nothing here touches the disk, the network or the clock: the applier (``sync``) passes
the manifest, the per-item state and ``now`` in, and carries out what comes back.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Literal

from hub_agent.config import ContentItem

State = Literal["queued", "downloading", "ready", "failed", "evicted"]
STATES: tuple[State, ...] = ("queued", "downloading", "ready", "failed", "evicted")

# Retries double from the base up to this ceiling, so a broken source costs little uplink.
MAX_BACKOFF_S = 6 * 3600.0


@dataclass(frozen=True)
class Held:
    """What the hub knows of one item (a row of the ``content_state`` table)."""

    id: str
    state: State
    size: int
    sha256: str
    pinned: bool = False
    bytes_on_disk: int = 0  # ready: the whole file; downloading: the .part so far
    last_used: float = 0.0  # epoch seconds of the last hit (or of becoming ready)
    hits: int = 0
    next_attempt: float = 0.0  # failed: not before this time
    reason: str = ""


@dataclass(frozen=True)
class Reconcile:
    add: tuple[str, ...]  # new in the manifest: queue them
    reset: tuple[str, ...]  # content changed (sha256/size): drop what we have, queue again
    drop: tuple[tuple[str, str], ...]  # (id, reason): unassigned or expired


def expired(item: ContentItem, today: date) -> bool:
    return item.valid_until is not None and date.fromisoformat(item.valid_until) < today


def reconcile(manifest: Sequence[ContentItem], held: Mapping[str, Held], today: date) -> Reconcile:
    """Line the local state up with the manifest the centre sent."""
    add: list[str] = []
    reset: list[str] = []
    drop: list[tuple[str, str]] = []
    wanted: dict[str, ContentItem] = {}
    for item in manifest:
        if expired(item, today):
            continue
        wanted[item.id] = item
        h = held.get(item.id)
        if h is None:
            add.append(item.id)
        elif (h.sha256, h.size) != (item.sha256, item.size):
            reset.append(item.id)
    listed = {i.id for i in manifest}
    for h in held.values():
        if h.id not in wanted:  # the row goes with the file, so this is said once
            drop.append((h.id, "expired" if h.id in listed else "unassigned"))
    return Reconcile(tuple(add), tuple(reset), tuple(drop))


def used_bytes(held: Mapping[str, Held], excluding: str | None = None) -> int:
    return sum(h.bytes_on_disk for h in held.values() if h.id != excluding)


@dataclass(frozen=True)
class Room:
    """The budget's answer for one item: fits (after evicting ``evict``), or refused."""

    evict: tuple[str, ...] = ()
    refused: Literal["oversize", "no_room"] | None = None
    detail: str = ""


def plan_room(item: ContentItem, held: Mapping[str, Held], budget: int) -> Room:
    """Make room for ``item``: pinned items always stay; others go least recently used first.

    An item larger than the whole budget is refused for good ("oversize"); an item that
    does not fit because pinned items (and items more precious than it) fill the budget is
    refused for now ("no_room") and nothing is evicted in vain.
    """
    if item.size > budget:
        return Room(refused="oversize", detail=f"{item.size} bytes > budget {budget} bytes")
    free = budget - used_bytes(held, excluding=item.id)
    if free >= item.size:
        return Room()
    # A normal item may only push out other normal items; a pinned one may push out any
    # normal item. Least recently used first, then fewest hits, then the larger one.
    candidates = sorted(
        # only whole items: a .part is uplink already paid for, and resumes first anyway
        (h for h in held.values() if h.id != item.id and not h.pinned and h.state == "ready"),
        key=lambda h: (h.last_used, h.hits, -h.bytes_on_disk),
    )
    evict: list[str] = []
    for h in candidates:
        if free >= item.size:
            break
        evict.append(h.id)
        free += h.bytes_on_disk
    if free < item.size:
        return Room(
            refused="no_room",
            detail=f"needs {item.size} bytes, at most {free} can be freed (pinned items stay)",
        )
    return Room(evict=tuple(evict))


def backoff_s(attempts: int, base_s: float) -> float:
    """Seconds to wait after the ``attempts``-th failure: base, 2*base, 4*base... capped."""
    return float(min(MAX_BACKOFF_S, base_s * 2 ** max(0, attempts - 1)))


def next_to_fetch(
    manifest: Sequence[ContentItem], held: Mapping[str, Held], budget: int, now: float
) -> ContentItem | None:
    """The item to download next, or None.

    A half-done download resumes first (its bytes are already paid for), then pinned items,
    then the manifest's order. Items larger than the budget are never fetched. An evicted
    item comes back only when it fits without evicting anything, else two items would
    push each other out forever, each costing a full download.
    """

    def due(item: ContentItem) -> bool:
        h = held.get(item.id)
        if item.size > budget or h is None:
            return False
        if h.state in ("queued", "downloading"):
            return True
        if h.state == "failed":
            return h.next_attempt <= now
        if h.state == "evicted":
            return budget - used_bytes(held, excluding=item.id) >= item.size
        return False

    todo = [i for i in manifest if due(i)]
    if not todo:
        return None

    def rank(item: ContentItem) -> tuple[int, int]:
        h = held[item.id]
        return (0 if h.bytes_on_disk > 0 else 1, 0 if item.priority == "pinned" else 1)

    return min(todo, key=rank)  # min is stable: manifest order breaks ties
