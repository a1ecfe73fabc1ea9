"""What every subcommand shares: one error path (one sentence, exit 2) and opening an
existing results database. The subcommand modules import this; it imports none of them."""

from __future__ import annotations

import sys
from pathlib import Path

from sqlalchemy.engine import Engine

from bench.db.database import open_db


def open_results(db: str | Path | None) -> Engine:
    """Open an existing results database; a missing one is a BenchError, not a new file."""
    return open_db(db, create=False)


def _one_sentence(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def run_command(func, args) -> int:
    """Run a subcommand; anything the user can fix ends in one line on stderr, exit 2.

    BenchError is the expected case. OSError (a path that is a file, a folder that cannot
    be written, a full disk) and database errors raised after the database was opened
    are input or environment problems too, so they are reported the same way, never as
    a traceback. Anything else is a bug and keeps its traceback.
    """
    from sqlalchemy.exc import SQLAlchemyError

    from bench.errors import BenchError
    try:
        return int(func(args) or 0)
    except BenchError as e:
        print(f"error: {_one_sentence(e)}", file=sys.stderr)
        return getattr(e, "exit_status", 2)
    except KeyboardInterrupt:
        print("interrupted: everything recorded so far is kept; rerun to resume", file=sys.stderr)
        return 130
    except OSError as e:
        where = f" {e.filename}" if getattr(e, "filename", None) else ""
        print(f"error: cannot use{where}: {e.strerror or _one_sentence(e)}", file=sys.stderr)
        return 2
    except SQLAlchemyError as e:
        msg = str(getattr(e, "orig", None) or e).strip().splitlines()
        print(f"error: the results database failed: {msg[0] if msg else type(e).__name__}",
              file=sys.stderr)
        return 2
