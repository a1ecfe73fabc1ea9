"""Reading rows by many keys: IN lists of a bounded length, or one pass over a table
that has fewer rows than there are keys (issue 16 §7: `ls` of 10⁶ cells).

An IN list of 500 keys stays under SQLite's oldest limit of 999 bound parameters; a
query per 500 keys costs ~15 ms with SQLAlchemy and SQLite, so 10⁶ keys take minutes,
while a pass over a table of 10⁵ rows takes about a second.
"""

from __future__ import annotations

from typing import Any, Iterator, Sequence, TypeVar

from sqlalchemy import func, select

T = TypeVar("T")
CHUNK = 500


def chunks(items: Sequence[T], size: int = CHUNK) -> Iterator[Sequence[T]]:
    """`items` in consecutive slices of at most `size`."""
    for i in range(0, len(items), size):
        yield items[i:i + size]


def select_in(conn, stmt, column, keys: Sequence[Any]) -> list:
    """The rows of `stmt` (a select on a Session or Connection) whose `column` is one of
    `keys`, one IN query per `CHUNK` keys."""
    rows: list = []
    for part in chunks(keys):
        rows += conn.execute(stmt.where(column.in_(part))).all()
    return rows


def count_rows(conn, table) -> int:
    """The number of rows of `table` (a Table or a mapped class)."""
    return conn.execute(select(func.count()).select_from(table)).scalar_one()
