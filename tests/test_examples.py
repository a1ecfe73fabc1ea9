"""Every command line the README and the `--help` pages show is run here.

They run in one working folder, as a new user would type them, in this order: the README's
main job (`python -m bench run suite.yaml --tag smoke`, for real, once), then the examples
that would train for long with `suite.yaml` replaced by a tiny suite of the same names
(`tiny-suite.yaml`: same tags, model and attack names, tables table1/table2, a few hundred
images and two PGD steps), then the rest in document order, each baseline check after the
baselines are saved. The selection of every `run` example is also checked against the real
suite.yaml (`ls` with the same --tag/--filter/--limit must select cells). The README's
set-up and test commands are what `.ci/run` runs; the commands of its offline-GPU recipe
that call pip are not run here (they download and install packages).
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import shutil
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from bench.cli.main import build_parser, main
from tests.conftest import REPO

TINY = textwrap.dedent("""\
    # suite.yaml's names at a scale that trains in seconds (tests/test_examples.py)
    version: 1
    seed: 1
    datasets:
      mnist: {plugin: mnist, train_subset: 512}
    attacks:
      clean: {plugin: clean, label: Natural}
      pgd40_linf: {plugin: pgd, label: PGD-40, config: {norm: linf, steps: 2, step_size: 0.1}}
      pgd40_l2: {plugin: pgd, label: PGD-40, config: {norm: l2, steps: 2, step_size: 0.5}}
    models:
      mnist_smallcnn_sgd:
        dataset: mnist
        arch: small_cnn
        defense: sgd
        label: SGD
        train: {epochs: 1, batch_size: 64, lr: 0.05, momentum: 0.9}
      mnist_smallcnn_pgd_at:
        base: mnist_smallcnn_sgd
        defense: pgd_at
        label: PGD-AT
        defense_config: {norm: linf, eps: 0.3, step_size: 0.1, steps: 2}
    matrix:
      - name: table1
        tags: [table1, mnist, l2]
        models: [mnist_smallcnn_sgd]
        attacks: [clean, pgd40_l2]
        eps: [2]
        eval: {n: 200}
      - name: table2
        tags: [table2, mnist, linf]
        models: [mnist_smallcnn_sgd, mnist_smallcnn_pgd_at]
        attacks: [clean, pgd40_linf]
        eps: [0.3]
        eval: {n: 200}
    tables:
      table1:
        title: "Table 1 (tiny)"
        source: "made up for this test"
        tolerance: 100
        rows: [mnist_smallcnn_sgd]
        columns: [{attack: clean, label: Natural}, {attack: pgd40_l2, eps: 2, label: PGD-40}]
        reported: {mnist_smallcnn_sgd: {Natural: 99.0, PGD-40: 10.0}}
      table2:
        title: "Table 2 (tiny)"
        source: "made up for this test"
        tolerance: 100
        rows: [mnist_smallcnn_sgd, mnist_smallcnn_pgd_at]
        columns: [{attack: clean, label: Natural}, {attack: pgd40_linf, eps: 0.3, label: PGD-40}]
        reported: {mnist_smallcnn_sgd: {PGD-40: 0.0}, mnist_smallcnn_pgd_at: {PGD-40: 90.0}}
    """)

# Lines of the README's code blocks that are not `python -m bench`: checked, not run.
SETUP_PREFIX = "python3 -m venv .venv"
TEST_COMMAND = "python -m pytest -q"
INSTALLS = ("pip download", "pip install")          # the offline-GPU recipe: needs a registry


@dataclass
class Example:
    source: str          # README.md or "bench run --help" …
    line: str            # as written

    @property
    def argv(self) -> list[str]:
        return shlex.split(self.line, comments=True)[3:]


def _code_lines(text: str) -> list[str]:
    """Command lines of a Markdown text's code blocks (indented or fenced), joined at `\\`."""
    lines, fenced = [], False
    for raw in text.splitlines():
        if raw.strip().startswith("```"):
            fenced = not fenced
            continue
        if fenced or raw.startswith("    "):
            lines.append(raw.strip())
    return _join_continuations(lines)


def _join_continuations(lines: list[str]) -> list[str]:
    out: list[str] = []
    pending = ""
    for ln in lines:
        if ln.endswith("\\"):
            pending += ln[:-1].rstrip() + " "
            continue
        out.append(pending + ln)
        pending = ""
    return [ln for ln in out if ln]


def readme_lines() -> list[str]:
    return [ln for ln in _code_lines((REPO / "README.md").read_text(encoding="utf-8"))
            if re.match(r"(python3? |pip )", ln)]


def help_examples() -> list[Example]:
    out = []

    def walk(parser, path):
        if parser.epilog and "examples:" in parser.epilog:
            body = parser.epilog.split("examples:", 1)[1]
            block = []
            for ln in body.splitlines():
                if ln.strip() == "" and block:
                    break
                if ln.strip():
                    block.append(ln.strip())
            for ln in _join_continuations(block):
                if ln.startswith("python -m bench"):
                    out.append(Example(f"{' '.join(path)} --help", ln))
        for a in parser._actions:
            if hasattr(a, "choices") and isinstance(a.choices, dict):
                for name, sub in a.choices.items():
                    if isinstance(sub, type(parser)):
                        walk(sub, path + [name])
    walk(build_parser(), ["bench"])
    return out


def all_examples() -> list[Example]:
    ex = [Example("README.md", ln) for ln in readme_lines() if ln.startswith("python -m bench")]
    return ex + help_examples()


def _selection(argv: list[str]) -> list[str]:
    """The suite and --tag/--filter/--limit/--seed of a `run` command line."""
    keep, out, i = {"--tag", "--filter", "--limit", "--seed"}, [argv[1]], 2
    while i < len(argv):
        if argv[i] in keep:
            out += argv[i:i + 2]
            i += 2
        else:
            i += 1 + (argv[i] in {"--db", "--data-root", "--device", "--results-dir", "--site"})
    return out


def is_main_job(argv) -> bool:
    return argv[:2] == ["run", "suite.yaml"] and _selection(argv) == ["suite.yaml", "--tag", "smoke"] \
        and "--dry-run" not in argv and "--device" not in argv


def trains_long(argv) -> bool:
    """A `run` that would train the paper's models for hours: gets the tiny suite."""
    return argv[:1] == ["run"] and "--dry-run" not in argv and "smoke" not in argv


def phase(e: Example) -> int:
    a = e.argv
    if is_main_job(a):
        return 0
    if trains_long(a):
        return 1
    if a[:2] == ["check", "--baseline"]:
        return 3
    return 2


def expectation(argv: list[str]) -> tuple[set[int], str]:
    """(allowed exit statuses, text the output must contain)."""
    if "--device" in argv and argv[argv.index("--device") + 1].startswith("cuda") \
            and not torch.cuda.is_available():
        return {2}, "no CUDA device is available"
    if argv[:2] == ["check", "--paper"]:
        return {0, 1}, "legend:"        # compared: 1 means "not reproduced", not an error
    return {0}, ""


class Workspace:
    """The user's working folder: suite.yaml (the real one), tiny-suite.yaml, results/."""

    def __init__(self, root: Path, data_root: Path):
        self.root, self.data_root = root, data_root
        shutil.copy(REPO / "suite.yaml", root / "suite.yaml")
        (root / "tiny-suite.yaml").write_text(TINY, encoding="utf-8")
        (root / ".data").symlink_to(data_root, target_is_directory=True)   # the GPU recipe's --data-root .data
        self.log: list[tuple[str, int, str, str]] = []

    def run(self, argv: list[str]) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        old_cwd, old_env = os.getcwd(), os.environ.get("BENCH_DATA_ROOT")
        os.chdir(self.root)
        os.environ["BENCH_DATA_ROOT"] = str(self.data_root)   # where bench looks, as in the tests
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                try:
                    rc = main(argv)
                except SystemExit as e:
                    rc = e.code if isinstance(e.code, int) else 2
        finally:
            os.chdir(old_cwd)
            if old_env is None:
                os.environ.pop("BENCH_DATA_ROOT", None)
            else:
                os.environ["BENCH_DATA_ROOT"] = old_env
        self.log.append((shlex.join(argv), rc, out.getvalue(), err.getvalue()))
        return rc, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, data_root, cifar10_root):
    """The README's main job, run once for real: every example below reads its results."""
    ws = Workspace(tmp_path_factory.mktemp("user"), data_root)
    main_jobs = [e for e in all_examples() if is_main_job(e.argv)]
    assert main_jobs, "the README shows no main job (`python -m bench run suite.yaml --tag smoke`)"
    ws.main_job = ws.run(main_jobs[0].argv)
    return ws


def test_the_main_job_ends_in_a_leaderboard_with_its_numbers(workspace):
    rc, out, err = workspace.main_job
    assert rc == 0, err[-3000:]
    assert "12 evaluated, 0 failed" in out
    index = workspace.root / "results" / "site" / "index.html"
    assert f"leaderboard: {Path('results') / 'site' / 'index.html'}" in out and index.exists()
    html = index.read_text(encoding="utf-8")
    grid = html[html.index('id="grid-smoke-mnist_smoke"'):]
    grid = grid[:grid.index("</table>")]
    heads = re.findall(r"<th[^>]*>(.*?)</th>", grid[:grid.index("</thead>")], re.S)
    assert [h.strip() for h in heads[1:]] == ["Benign", "PGD-10 ε=0.1", "PGD-10 ε=0.3",
                                              "Worst case (ε = 0.1)", "Worst case (ε = 0.3)"]
    labels = re.findall(r'scope="row">\s*<a [^>]*>(.*?)</a>', grid)
    assert labels == ["SGD (smoke)", "PGD-AT (smoke)", "TRADES (smoke)", "ℓ∞ ATENT (smoke)"]
    # every cell of the 4 × 3 grid has its value and interval, as the run printed them
    printed = dict(re.findall(r"^(mnist_smoke/\S+)\s+([\d.]+)%", out, re.M))
    assert len(printed) == 12
    for cell_id, value in printed.items():
        assert f">{value}<" in grid, (cell_id, value)
    assert grid.count("95 % Wilson interval") == 12 and "SMOKE" in grid
    # the grid comes before the paper tables, none of which has a result yet
    assert html.index('id="grid-smoke-mnist_smoke"') < html.index('id="tables"')
    # ls shows each done cell's robust accuracy beside its status
    rc, out, _ = workspace.run(["ls", "suite.yaml", "--tag", "smoke"])
    assert rc == 0 and len(re.findall(r" done\s+\d+\.\d\d%", out)) == 12


def test_the_main_job_log_is_never_silent(workspace):
    """Piped (no terminal): each epoch line has its time and throughput, each cell a line."""
    _, _, err = workspace.main_job
    epochs = re.findall(r"epoch \d/2: loss [\d.]+, [\d.]+s, [\d,]+ examples/s", err)
    assert len(epochs) == 8                          # 4 models × 2 epochs
    assert len(re.findall(r"^  mnist_smoke/\S+: [\d.]+% of 500 \([\d.]+s\)$", err, re.M)) == 12


def test_every_example_runs(workspace):
    examples = all_examples()
    assert len(examples) >= 25
    seen: set[tuple[str, ...]] = set()
    failures = []
    for ex in sorted(examples, key=phase):
        argv = ex.argv
        if is_main_job(argv) or tuple(argv) in seen:
            continue                                   # the main job ran once, in the fixture
        seen.add(tuple(argv))
        if argv[:1] == ["run"]:                        # its selection is real on suite.yaml
            rc, out, err = workspace.run(["ls", *_selection(argv)])
            if rc != 0 or " pending" not in out + err and " done" not in out:
                failures.append(f"{ex.source}: {ex.line}\n  selects nothing in suite.yaml: {err.strip()}")
                continue
        if trains_long(argv):
            argv = ["tiny-suite.yaml" if a == "suite.yaml" else a for a in argv]
        allowed, text = expectation(argv)
        rc, out, err = workspace.run(argv)
        if rc not in allowed or text not in out + err or "Traceback" in out + err:
            failures.append(f"{ex.source}: {ex.line}\n  exit {rc} (expected {sorted(allowed)}); "
                            f"stderr: {err.strip()[-600:]}")
    assert not failures, "\n".join(failures)
    # what the examples produced: exports with the smoke table, baselines, reports
    export = workspace.root / "results" / "site" / "export"
    assert (export / "smoke-mnist_smoke.json").exists() and (export / "table2.csv").exists()
    assert (workspace.root / "results" / "baselines" / "nightly.json").exists()


def test_the_readme_setup_and_test_commands_are_what_ci_runs():
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    lines = readme_lines()
    setup = [ln for ln in lines if ln.startswith(SETUP_PREFIX)]
    assert len(setup) == 1
    def install_args(line: str) -> list[str]:        # what pip installs, not how quietly
        args = shlex.split(line[line.index("pip install"):])[2:]
        return [a for a in args if a == "-e" or not a.startswith("-")]
    ci_pip = [ln for ln in ci.splitlines() if ln.startswith("pip install")]
    assert len(ci_pip) == 1 and install_args(ci_pip[0]) == install_args(setup[0])
    assert install_args(setup[0]) == ["torch==2.14.1", "torchvision==0.29.1", "-e", ".[dev]"]
    assert "python3 -m venv .venv" in ci
    assert TEST_COMMAND in lines and TEST_COMMAND in ci
    others = [ln for ln in lines if not ln.startswith(("python -m bench", SETUP_PREFIX, TEST_COMMAND))]
    assert all(ln.startswith(INSTALLS) for ln in others), others
