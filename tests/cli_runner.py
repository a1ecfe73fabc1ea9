"""`python -m bench ARGV` in the test's own process, for tests that read its exit status and
its two streams (a subprocess per case would cost a second of imports each)."""

from __future__ import annotations

import contextlib
import io

from bench.cli.main import main


def run_cli(argv) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of `python -m bench ARGV`; paths in ARGV may be Paths."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main([str(a) for a in argv])
        except SystemExit as e:             # argparse's own usage errors
            rc = e.code if isinstance(e.code, int) else 2
    return rc, out.getvalue(), err.getvalue()
