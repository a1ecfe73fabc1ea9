"""`python -m bench`: the command line (`bench.cli.main`), with bench's own plugin packages."""

import os
import sys


def _drop_current_folder() -> None:
    """`python -m` puts the current folder first on sys.path, where a project's own `models/`
    (or `attacks/`, `defenses/`, `executors/`) package would be imported in place of bench's
    plugin packages. Keep it only when it is bench's own project folder."""
    import bench
    root = os.path.dirname(os.path.dirname(os.path.realpath(bench.__file__)))
    try:
        here = os.path.realpath(os.getcwd())
    except OSError:            # the current folder was deleted: nothing of it can be imported
        return
    if here != root:
        sys.path[:] = [p for p in sys.path if os.path.realpath(p or os.curdir) != here]


if __name__ == "__main__":
    _drop_current_folder()
    from bench.cli.main import main
    sys.exit(main())
