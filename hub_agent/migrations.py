"""Registered schema steps, one list per feature, for the hub's and the centre's databases.

Each feature (``"sessions"``, ``"registry"``, ``"payments"``...) registers numbered steps
under its own name; ``apply`` runs those not yet recorded in the ``_migrations`` table as
``(owner, name)``, each in one transaction, so a failed step leaves nothing half done.

This module knows no engine: the hub's store (``hub_agent.store``, SQLite through
sqlite-utils) and the centre's (``provisioning.storage``, SQLite or PostgreSQL) each
subclass ``Migrations`` with the transaction their engine opens a step in. It lives on the
hub side because the centre already builds on hub modules while the hub never imports
central code.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar


class _Rows(Protocol):
    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


class SqlDb(Protocol):
    """What a step's bookkeeping needs of a database: ``?`` placeholders and its tables."""

    def execute(self, sql: str, params: Sequence[Any], /) -> _Rows: ...

    def table_names(self) -> list[str]: ...


D = TypeVar("D", bound=SqlDb)


@dataclass(frozen=True)
class Step(Generic[D]):
    owner: str
    name: str
    fn: Callable[[D], None]


class Migrations(ABC, Generic[D]):
    """An ordered list of schema steps owned by one feature; a step is registered by
    decorating it (its function name is its record)."""

    def __init__(self, owner: str) -> None:
        self.owner = owner
        self.steps: list[Step[D]] = []

    def __call__(self, fn: Callable[[D], None]) -> Callable[[D], None]:
        self.steps.append(Step(self.owner, fn.__name__, fn))
        return fn

    @abstractmethod
    def step_transaction(self, db: D) -> AbstractContextManager[object]:
        """The transaction one step runs in, holding the lock that keeps two processes
        from applying it at once (each engine's store says how)."""

    def apply(self, db: D) -> list[str]:
        """Apply the steps not applied yet, each in its own transaction; return their names.

        Safe with several processes starting at once: a step's record is checked again
        inside its transaction, under the lock, so a step runs once."""
        if "_migrations" not in db.table_names():
            db.execute(
                "CREATE TABLE IF NOT EXISTS _migrations (owner TEXT NOT NULL,"
                " name TEXT NOT NULL, PRIMARY KEY (owner, name))",
                (),
            )
        done = {
            str(r[0])
            for r in db.execute(
                "SELECT name FROM _migrations WHERE owner = ?", [self.owner]
            ).fetchall()
        }
        applied = []
        for step in self.steps:
            if step.name in done:
                continue
            with self.step_transaction(db):
                if db.execute(  # another process may have applied it meanwhile
                    "SELECT 1 FROM _migrations WHERE owner = ? AND name = ?",
                    [self.owner, step.name],
                ).fetchone():
                    continue
                step.fn(db)
                db.execute(
                    "INSERT INTO _migrations (owner, name) VALUES (?, ?)", [self.owner, step.name]
                )
            applied.append(step.name)
        return applied
