"""Hostile suite files and command-line numbers (issue 16 §4): every number is finite and in
range where it is read, no document can hang or blow up the loader, names that become file
names are bounded. Each case is a real YAML file through the real CLI (`bench validate`,
`bench ls`, `bench run`), in this process, and must end in one sentence and exit status 2,
never a traceback, never a hang."""

from __future__ import annotations

import contextlib
import faulthandler
import re
import signal
import textwrap

import pytest

from bench.errors import SuiteError
from bench.run.plan import expand
from bench.suite.load import load_suite
from tests import cli_runner

SUITE = textwrap.dedent("""\
    version: 1
    seed: 0
    attacks:
      clean: {plugin: clean}
      pgd5:
        plugin: pgd
        config: {norm: linf, steps: 5, step_size: 0.1}
    models:
      m:
        dataset: mnist
        arch: small_cnn
        defense: sgd
        train: {epochs: 1, batch_size: 64, lr: 0.05}
    matrix:
      - name: main
        models: [m]
        attacks: [clean, pgd5]
        eps: [0.1]
        eval: {n: 32}
    """)


class Hang(BaseException):
    """Raised by the deadline: not an Exception, so no handler on the way swallows it."""


@contextlib.contextmanager
def deadline(seconds: int):
    """Turn a hang into a failure: SIGALRM raises `Hang` in Python code; if C code holds
    the interpreter (a huge integer power, a C JSON encoder), faulthandler prints every
    stack and ends the process a little later instead of letting the run hang forever."""
    def on_alarm(signum, frame):
        raise Hang(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    faulthandler.dump_traceback_later(seconds + 30, exit=True)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        faulthandler.cancel_dump_traceback_later()


def run_cli(argv: list) -> tuple[int, str, str]:
    """tests/cli_runner.py's `run_cli`, failing instead of hanging past a minute."""
    with deadline(60):
        return cli_runner.run_cli(argv)


def assert_one_sentence(rc: int, out: str, err: str, phrase: str) -> str:
    assert rc == 2, (rc, out[-500:], err[-2000:])
    assert "Traceback" not in out + err
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith(("usage:", " "))]
    assert len(lines) == 1, err
    assert "error:" in lines[0] and phrase in lines[0], lines[0]
    assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f]", lines[0]), repr(lines[0])
    return lines[0]


def write(tmp_path, text: str, name: str = "suite.yaml"):
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def refused(tmp_path, text: str, phrase: str, commands=("validate", "ls")) -> None:
    p = write(tmp_path, text)
    for cmd in commands:
        argv = [cmd, p] + (["--db", tmp_path / "none.sqlite"] if cmd == "ls" else [])
        assert_one_sentence(*run_cli(argv), phrase)


# ============================================================================ numbers in a suite

NUMBERS = [
    # ε: a literal that overflows a float, and one whose exact value is 10**999999999 / 3
    ("eps: [0.1]", "eps: ['1e400']", "epsilon"),
    ("eps: [0.1]", "eps: ['1e999999999/3']", "epsilon"),
    ("eps: [0.1]", "eps: [1001]", "epsilon"),
    ("eps: [0.1]", "eps: ['" + "1" * 70 + "']", "longer than 64 characters"),
    # the training recipe: NaN and out-of-range values
    ("lr: 0.05}", "lr: .nan}", "finite"),
    ("lr: 0.05}", "lr: 0.05, weight_decay: .nan}", "finite"),
    ("lr: 0.05}", "lr: 0.05, momentum: 2.0}", "momentum"),
    ("lr: 0.05}", "lr: 0.05, gamma: 0.0}", "gamma"),
    ("lr: 0.05}", "lr: 0.05, milestones: [0]}", "milestones"),
    ("lr: 0.05}", "lr: 0.05, warmup_epochs: -1}", "warmup_epochs"),
    ("lr: 0.05}", "lr: 0.05, val_size: -5}", "val_size"),
    ("epochs: 1,", "epochs: 1000000,", "epochs"),
    # seeds and integers beyond 64 bits
    ("seed: 0", "seed: 12345678901234567890123456", "64 bits"),
    ("seed: 0", "seed: -1", "seed"),
    ("    eval: {n: 32}", "    eval: {n: 32}\n    seed: 9223372036854775808", "64 bits"),
    ("steps: 5,", "steps: 99999999999999999999999,", "64 bits"),
    ("step_size: 0.1}", "step_size: .inf}", "got inf"),
    ("    eval: {n: 32}", "    eval: {n: " + "9" * 5000 + "}", "64 bits"),
]


@pytest.mark.parametrize("old,new,phrase", NUMBERS, ids=[n[:40] for _, n, _ in NUMBERS])
def test_a_number_out_of_range_is_one_sentence(tmp_path, old, new, phrase):
    assert old in SUITE
    refused(tmp_path, SUITE.replace(old, new, 1), phrase)


def test_a_table_tolerance_is_finite_and_in_range(tmp_path):
    for tol in (".nan", ".inf", "-1"):
        text = SUITE + textwrap.dedent(f"""\
            tables:
              t:
                tolerance: {tol}
                rows: [m]
                columns: [{{attack: clean, label: Clean}}]
            """)
        refused(tmp_path, text, "tolerance", commands=("validate",))


# ============================================================================ documents that cost

def alias_bomb(levels: int = 9) -> str:
    """A 'billion laughs' document: 9**levels strings from a few hundred bytes."""
    lines = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]")
    return "\n".join(lines)


def test_an_alias_bomb_in_a_plugin_config_is_refused_by_validate_and_ls(tmp_path):
    # timm's `kwargs: dict[str, Any]` takes any structure; cell keys hash it whole
    text = SUITE.replace("    arch: small_cnn\n",
                         "    arch: timm:resnet18\n    arch_config:\n      kwargs:\n"
                         + textwrap.indent(alias_bomb(), " " * 8) + "\n")
    assert len(text.encode()) - len(SUITE.encode()) < 900
    refused(tmp_path, text, "alias")


def test_a_recursive_alias_is_refused(tmp_path):
    text = SUITE.replace("    arch: small_cnn\n",
                         "    arch: timm:resnet18\n    arch_config:\n"
                         "      kwargs: {loop: &x [1, *x]}\n")
    refused(tmp_path, text, "recursive")


def test_deep_nesting_is_refused(tmp_path):
    refused(tmp_path, SUITE + "description: " + "[" * 10_000 + "]" * 10_000 + "\n", "nested")
    # depth through aliases: each anchor 10 deep inside the next
    chain = ["x0: &x0 [[[[[[[[[[0]]]]]]]]]]"] + [
        f"x{i}: &x{i} [[[[[[[[[[*x{i - 1}]]]]]]]]]]" for i in range(1, 20)]
    refused(tmp_path, SUITE + "description:\n" + textwrap.indent("\n".join(chain), "  ") + "\n",
            "nested")


def test_a_file_over_the_size_cap_is_refused(tmp_path):
    from bench.suite.yamlload import MAX_BYTES
    refused(tmp_path, SUITE + "# " + "x" * MAX_BYTES + "\n", "larger than")


# ============================================================================ keys and names

@pytest.mark.parametrize("text,phrase", [
    (SUITE.replace("  clean: {plugin: clean}", "  ? [a, b]\n  : {plugin: clean}"), "must be text"),
    (SUITE.replace("  clean: {plugin: clean}", "  clean: {plugin: clean}\n  ~: {plugin: clean}"),
     "must be text, got null"),
    (SUITE.replace("seed: 0", "seed: 0\nyes: 1"), "yes/no"),
    (SUITE.replace("  m:\n", '  "m\\e[31m":\n', 1), "control characters"),
    (SUITE.replace("    defense: sgd\n", '    defense: sgd\n    label: "red\\x1b[31m"\n'),
     "control characters"),
    (SUITE.replace("seed: 0", "seed: 0\ntags: !!set {a, b}"), "tag 'set'"),
], ids=["list key", "null key", "yes key", "escape in a name", "escape in a label", "set tag"])
def test_keys_are_text_and_text_has_no_control_characters(tmp_path, text, phrase):
    refused(tmp_path, text, phrase)


@pytest.mark.parametrize("where,name", [
    ("table", "t" * 250), ("model", "m" * 101), ("attack", "../x"), ("model", "a/b"),
    ("matrix", ".hidden"), ("dataset", "d" * 300), ("reference", "r" * 200),
])
def test_names_that_become_file_names_are_bounded(tmp_path, where, name):
    text = SUITE + textwrap.dedent("""\
        tables:
          t:
            rows: [m]
            columns: [{attack: clean, label: Clean}]
        """)
    if where == "table":
        text = text.replace("\n  t:\n", f"\n  {name}:\n")
    elif where == "model":
        text = text.replace("\n  m:\n", f"\n  '{name}':\n").replace("[m]", f"['{name}']")
    elif where == "attack":
        text = text.replace("  clean: {plugin: clean}", f"  '{name}': {{plugin: clean}}")
        text = text.replace("[clean, pgd5]", f"['{name}', pgd5]").replace("attack: clean", f"attack: '{name}'")
    elif where == "matrix":
        text = text.replace("  - name: main", f"  - name: '{name}'")
    elif where == "dataset":
        text = text.replace("attacks:\n", f"datasets:\n  {name}: {{plugin: mnist}}\nattacks:\n", 1)
    else:
        text = text.replace("rows: [m]", f"rows: [m, {{reference: {name}, label: R}}]")
    line = assert_one_sentence(*run_cli(["validate", write(tmp_path, text)]), "name")
    assert len(line) < 400


# ============================================================================ merge keys

WRITTEN_OUT = textwrap.dedent("""\
    version: 1
    attacks:
      pgd_a: {plugin: pgd, config: {norm: linf, steps: 5, step_size: 0.1}}
      pgd_b: {plugin: pgd, config: {norm: linf, steps: 7, step_size: 0.1}}
    models:
      m1: {dataset: mnist, arch: small_cnn, defense: sgd, train: {epochs: 1, lr: 0.05, batch_size: 64}}
      m2: {dataset: mnist, arch: small_cnn, defense: sgd, train: {epochs: 2, lr: 0.05, batch_size: 64}}
    matrix:
      - {name: main, models: [m1, m2], attacks: [pgd_a, pgd_b], eps: [0.1, 0.2], eval: {n: 32}}
    """)

MERGED = textwrap.dedent("""\
    version: 1
    attacks:
      pgd_a: {plugin: pgd, config: &pgd {norm: linf, steps: 5, step_size: 0.1}}
      pgd_b: {plugin: pgd, config: {<<: *pgd, steps: 7}}
    models:
      m1: &m {dataset: mnist, arch: small_cnn, defense: sgd, train: &tr {epochs: 1, lr: 0.05, batch_size: 64}}
      m2:
        <<: *m
        train: {<<: *tr, epochs: 2}
    matrix:
      - {name: main, models: [m1, m2], attacks: [pgd_a, pgd_b], eps: [0.1, 0.2], eval: {n: 32}}
    """)


def test_merge_keys_work_and_give_the_written_out_cell_keys(tmp_path):
    merged, written = write(tmp_path, MERGED, "merged.yaml"), write(tmp_path, WRITTEN_OUT, "written.yaml")
    rc, out, err = run_cli(["validate", merged])
    assert rc == 0 and "8 cells" in out, err
    keys = [sorted(c.key for c in expand(load_suite(p))) for p in (merged, written)]
    assert keys[0] == keys[1] and len(keys[0]) == 8


def test_a_real_duplicate_key_beside_a_merge_is_still_an_error(tmp_path):
    text = MERGED.replace("    train: {<<: *tr, epochs: 2}",
                          "    train: {<<: *tr, epochs: 2}\n    defense: sgd\n    defense: sgd")
    with pytest.raises(SuiteError, match="duplicate key 'defense'"):
        load_suite(write(tmp_path, text))


def test_merge_order_follows_yaml(tmp_path):
    """The first mapping of a `<<: [*a, *b]` list wins over the later, the own keys over both."""
    import yaml

    from bench.suite.yamlload import load_yaml
    text = "a: &a {x: 1, y: 1}\nb: &b {x: 2, y: 2, z: 2}\nc:\n  <<: [*a, *b]\n  y: 3\n"
    assert load_yaml("m.yaml", text)["c"] == yaml.safe_load(text)["c"] == {"x": 1, "y": 3, "z": 2}


# ============================================================================ command-line numbers

CLI = [
    (["ls", "S", "--seed", "12345678901234567890123456"], "--seed"),
    (["ls", "S", "--seed", "1e30"], "is not a whole number"),
    (["ls", "S", "--seed", "-3"], "--seed"),
    (["run", "S", "--lease", "inf"], "--lease"),
    (["run", "S", "--lease", "nan"], "--lease"),
    (["run", "S", "--lease", "1e9"], "7 days"),
    (["ls", "S", "--limit", "-1"], "must be ≥ 1"),
    (["ls", "S", "--limit", "nan"], "is not a whole number"),
    (["ls", "S", "--limit", "99999999999999999999999"], "--limit"),
    (["run", "S", "--workers", "0"], "argument --workers: must be ≥ 1"),
    (["workers", "--run", "99999999999999999999999"], "--run"),
    (["check", "--paper", "--tolerance", "nan"], "--tolerance"),
    (["check", "--baseline", "b.json", "--threshold", "inf"], "--threshold"),
]


@pytest.mark.parametrize("argv,phrase", CLI, ids=[" ".join(a[2:]) for a, _ in CLI])
def test_command_line_numbers_are_one_sentence(tmp_path, monkeypatch, argv, phrase):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, SUITE, "S")
    argv = argv + (["--db", tmp_path / "none.sqlite"] if argv[0] in ("ls", "workers", "check") else
                   ["--db", tmp_path / "r.sqlite", "--dry-run"])
    assert_one_sentence(*run_cli(argv), phrase)


def test_executor_options_follow_the_suite_yaml_rules(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, SUITE, "S")
    opt = "sbatch=" + "{" + alias_bomb().replace("\n", ", ") + "}"
    assert_one_sentence(*run_cli(["run", "S", "--executor", "gpus", "--executor-opt", opt,
                                  "--db", tmp_path / "r.sqlite", "--dry-run"]), "alias")
