"""suite.yaml validation: each kind of bad input is one clear, located error."""

from __future__ import annotations

import textwrap

import pytest

from bench.cli.main import main
from bench.plugins.eps import parse_eps
from bench.errors import SuiteError
from bench.suite.load import load_suite

GOOD = textwrap.dedent("""\
    version: 1
    seed: 0
    datasets:
      tiny: {plugin: mnist, train_subset: 256}
    attacks:
      clean: {plugin: clean}
      pgd5:
        plugin: pgd
        config: {norm: linf, steps: 5, step_size: 0.1}
    models:
      m_sgd:
        dataset: tiny
        arch: small_cnn
        defense: sgd
        train: {epochs: 1, batch_size: 64, lr: 0.05}
      m_at:
        base: m_sgd
        defense: pgd_at
        defense_config: {eps: 0.3, step_size: 0.1, steps: 2}
    matrix:
      - name: main
        tags: [t1]
        models: [m_sgd, m_at]
        attacks: [clean, pgd5]
        eps: [0.1, "8/255"]
        eval: {n: 64}
    tables:
      tab:
        title: A table
        source: "paper, Table 1"
        rows: [m_sgd, m_at]
        columns:
          - {attack: clean, label: Clean}
          - {attack: pgd5, eps: 0.1, label: PGD}
        reported:
          m_sgd: {Clean: 99.0}
    """)


def write(tmp_path, text):
    p = tmp_path / "suite.yaml"
    p.write_text(text)
    return p


def error_of(tmp_path, text) -> SuiteError:
    with pytest.raises(SuiteError) as ei:
        load_suite(write(tmp_path, text))
    return ei.value


def line_of(text: str, needle: str) -> int:
    for i, line in enumerate(text.splitlines(), 1):
        if needle in line:
            return i
    raise AssertionError(needle)


def test_good_suite_parses(tmp_path):
    s = load_suite(write(tmp_path, GOOD))
    assert set(s.models) == {"m_sgd", "m_at"}
    assert s.models["m_at"].defense == "pgd_at"
    assert s.models["m_at"].train.epochs == 1          # inherited through base
    assert s.models["m_at"].defense_config.steps == 2
    eps = s.matrix[0].eps
    assert [e.literal for e in eps] == ["0.1", "8/255"]
    assert eps[1].value == pytest.approx(8 / 255)
    assert s.tables["tab"].reported == {("m_sgd", "Clean"): 99.0}


@pytest.mark.parametrize("old,new,needle,key_part,msg_part", [
    # unknown key, with a suggestion
    ("    tags: [t1]", "    tagz: [t1]", "tagz", "tagz", "did you mean 'tags'"),
    # unknown plugin name, with a suggestion
    ("plugin: pgd\n", "plugin: pdg\n", "plugin: pdg", "plugin", "did you mean 'pgd'"),
    ("defense: pgd_at", "defense: pgd_ta", "defense: pgd_ta", "defense", "did you mean 'pgd_at'"),
    ("arch: small_cnn", "arch: smal_cnn", "arch: smal_cnn", "arch", "did you mean 'small_cnn'"),
    # wrong type inside a plugin config
    ("steps: 5,", "steps: five,", "steps: five", "steps", "must be an integer"),
    # unknown key inside a plugin config
    ("step_size: 0.1}\nmodels", "stepsize: 0.1}\nmodels", "stepsize", "stepsize", "did you mean 'step_size'"),
    # malformed ε
    ('eps: [0.1, "8/255"]', 'eps: [0.1, "8/2x5"]', "8/2x5", "eps", "malformed epsilon"),
    # wrong type in the training recipe
    ("epochs: 1,", "epochs: one,", "epochs: one", "epochs", "must be an integer"),
    # a reference to an unknown model
    ("models: [m_sgd, m_at]", "models: [m_sgd, m_xt]", "models: [m_sgd, m_xt]", "models", "unknown model 'm_xt'"),
    # a literal choice
    ("norm: linf,", "norm: l3,", "norm: l3", "norm", "must be one of"),
    # an unknown preset of a defense, with a suggestion
    ("defense_config: {eps: 0.3,", "defense_config: {preset: mnist_lin, eps: 0.3,",
     "preset: mnist_lin", "preset", "did you mean 'mnist_linf'"),
    # a preset where the plugin has none
    ("config: {norm: linf, steps: 5,", "config: {preset: x, norm: linf, steps: 5,",
     "preset: x", "preset", "unknown key"),
])
def test_each_bad_input_is_one_located_error(tmp_path, old, new, needle, key_part, msg_part):
    assert old in GOOD
    text = GOOD.replace(old, new, 1)
    err = error_of(tmp_path, text)
    assert err.file.endswith("suite.yaml")
    assert err.line == line_of(text, needle), str(err)
    assert key_part in (err.key or ""), str(err)
    assert msg_part in str(err)


def test_duplicate_name_is_an_error(tmp_path):
    text = GOOD.replace("  m_at:\n", "  m_sgd:\n", 1)
    err = error_of(tmp_path, text)
    assert "duplicate key 'm_sgd'" in str(err)
    assert err.line == text.splitlines().index("  m_sgd:", 12) + 1


def test_duplicate_matrix_entry_name(tmp_path):
    text = GOOD.replace("    tables:", "") + textwrap.dedent("""\
        """)
    text = GOOD.replace("tables:", "  - {name: main, models: [m_sgd], attacks: [clean]}\ntables:", 1)
    err = error_of(tmp_path, text)
    assert "duplicate matrix entry name 'main'" in str(err)


def test_invalid_yaml_is_located(tmp_path):
    err = error_of(tmp_path, "version: 1\nmodels: [a\n")
    assert err.line is not None and "invalid YAML" in str(err)


def test_reported_value_must_name_a_column(tmp_path):
    err = error_of(tmp_path, GOOD.replace("m_sgd: {Clean: 99.0}", "m_sgd: {Clena: 99.0}"))
    assert "did you mean 'Clean'" in str(err)


def test_circular_base(tmp_path):
    text = GOOD.replace("  m_sgd:\n    dataset: tiny", "  m_sgd:\n    base: m_at\n    dataset: tiny")
    assert "circular base" in str(error_of(tmp_path, text))


def test_cli_exit_status_2_without_traceback(tmp_path, capsys):
    p = write(tmp_path, GOOD.replace("plugin: pgd\n", "plugin: pdg\n"))
    assert main(["validate", str(p)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert f"{p}:" in err


def test_cli_validate_ok(tmp_path, capsys):
    assert main(["validate", str(write(tmp_path, GOOD))]) == 0
    assert "ok" in capsys.readouterr().out


@pytest.mark.parametrize("raw,value,literal", [
    ("8/255", 8 / 255, "8/255"), ("0.031", 0.031, "0.031"), (0.3, 0.3, "0.3"), (2, 2.0, "2"),
    (" 2 / 255 ", 2 / 255, "2/255"), ("1e-3", 1e-3, "1e-3"),
])
def test_eps_literals(raw, value, literal):
    e = parse_eps(raw)
    assert e.value == pytest.approx(value) and e.literal == literal


@pytest.mark.parametrize("raw", ["8/2x5", "eight", "", "1/0", "-0.1", None, True, "8//255"])
def test_malformed_eps(raw):
    with pytest.raises(ValueError):
        parse_eps(raw)


def test_shipped_suite_is_valid(capsys):
    from tests.conftest import REPO
    assert main(["validate", str(REPO / "suite.yaml")]) == 0


def test_a_list_where_a_name_belongs_is_a_located_error(tmp_path):
    text = GOOD.replace("dataset: tiny", "dataset: [tiny]")
    err = error_of(tmp_path, text)
    assert "unknown dataset ['tiny']" in str(err) and err.line == line_of(text, "dataset: [tiny]")


@pytest.mark.parametrize("block,needle,msg", [
    ("    include:\n      - {model: m_sgd, attack: pgd5}\n", "{model: m_sgd, attack: pgd5}", "needs 'eps'"),
    ("    include:\n      - {model: m_sgd, attack: pdg5, eps: 0.1}\n", "attack: pdg5", "did you mean 'pgd5'"),
    ("    exclude:\n      - {}\n", "- {}", "empty exclude"),
    ("    exclude:\n      - {modle: m_sgd}\n", "modle", "did you mean 'model'"),
    ("    exclude:\n      - {eps: 8/2x5}\n", "8/2x5", "malformed epsilon"),
])
def test_include_exclude_errors_are_located(tmp_path, block, needle, msg):
    old = "    eval: {n: 64}\n"
    text = GOOD.replace(old, old + block)
    err = error_of(tmp_path, text)
    assert msg in str(err) and err.line == line_of(text, needle), str(err)


def test_a_preset_is_its_values_written_out_and_explicit_keys_win(tmp_path):
    from bench.run.plan import expand
    from bench.plugins.registry import DEFENSES
    preset = GOOD.replace("defense_config: {eps: 0.3, step_size: 0.1, steps: 2}",
                          "defense_config: {preset: mnist_linf}")
    values = DEFENSES.get("pgd_at").Config.PRESETS["mnist_linf"]
    written = GOOD.replace("defense_config: {eps: 0.3, step_size: 0.1, steps: 2}",
                           "defense_config: {" + ", ".join(f"{k}: {v}" for k, v in values.items())
                           + "}")
    a, b = load_suite(write(tmp_path, preset)), load_suite(write(tmp_path, written))
    assert a.models["m_at"].defense_config == b.models["m_at"].defense_config
    assert a.models["m_at"].defense_config.steps == 40
    assert [c.key for c in expand(a)] == [c.key for c in expand(b)]
    over = load_suite(write(tmp_path, preset.replace("{preset: mnist_linf}",
                                                     "{preset: mnist_linf, steps: 7}")))
    assert over.models["m_at"].defense_config.steps == 7
    assert over.models["m_at"].defense_config.eps == pytest.approx(0.3)
