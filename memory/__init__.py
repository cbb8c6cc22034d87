"""What was lived: the trajectory store (SQLite by default, PostgreSQL for clusters).

Importing this package is cheap: the backends (and psycopg) load only when a store is
opened, through :func:`open_store` or a store config's ``build()``.

Example:
    >>> from memory import TrajectoryQuery, open_store
    >>> with open_store(":memory:") as store:
    ...     store.count(TrajectoryQuery(suite="bundled"))
    0
"""

from memory.base import RunInfo, RunSummary, TrajectoryQuery, TrajectoryStore, TrajectorySummary, open_store

__all__ = ["RunInfo", "RunSummary", "TrajectoryQuery", "TrajectoryStore", "TrajectorySummary", "open_store"]
