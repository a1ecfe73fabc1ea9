"""suite.yaml → a validated `Suite`.

Every problem is one `SuiteError` naming the file, the line and the key. Plugin names
are checked against the registries (with a "did you mean"), plugin configs against the
plugins' typed `Config` dataclasses, ε literals parsed and kept as written.

Top-level keys:

    version: 1
    name, description
    seed: 0                 # default seed of models and cells
    precision: fp32 | bf16  # numerics policy (fp32 is the reference)
    compile: false
    compile_mode: auto      # auto | default | reduce-overhead | max-autotune | max-autotune-no-cudagraphs
    defaults: {train: {...}, eval: {...}}
    datasets: {NAME: {plugin, train_subset}}
    models:   {NAME: {dataset, arch, arch_config, defense, defense_config, train, seed,
                      label, base, checkpoint, description}}
    attacks:  {NAME: {plugin, config, label, base, description}}
    matrix:   [{name, tags, models, attacks, eps, eval, smoke, seed, include, exclude}]
    tables:   {NAME: {title, source, order, tags, tolerance, orientation, info, rows, columns,
                      reported, reported_by, notes}}   (bench.suite.tables)
    executors: {NAME: {OPTION: value}}   # options of `run --executor NAME` (docs/scale.md)

`base: OTHER` in a model or attack inherits OTHER's entry, deep-merged under this one. YAML
anchors and merge keys (`<<: *anchor`) work as in YAML 1.1 (bench.suite.yamlload, which
also bounds a file's size, depth and alias expansion).

Names of datasets, attacks, models, tables and matrix entries are at most 100 characters
of letters, digits, '_', '.', '-' (`Ctx.name`: they become cell ids and file names);
seeds are in [0, 2**63 - 1].

A model's `checkpoint:` evaluates released weights instead of training: a local PATH, or
`{url: http(s)://… or file://…, sha256: 64 hex}` downloaded once into the checkpoint cache
and verified (`bench.checkpoints.download`; without sha256 the first download's hash is recorded and
later different files are refused). Such a model needs no `defense:`: it is recorded as
defense "external". `arch` stays required (the weights load into a known network).
"""

from __future__ import annotations

import copy
import hashlib
from pathlib import Path

from bench.plugins.config import ConfigError
from bench.checkpoints.download import SHA256_RE, RemoteCheckpoint, url_problem
from bench.errors import PluginError, SuiteError
from bench.suite.recipe import EvalConfig, TrainConfig
from bench.plugins.registry import ATTACKS, DATASETS, DEFENSES, did_you_mean
from bench.suite.spec import (COMPILE_MODES, EXTERNAL_DEFENSE, AttackSpec, DatasetSpec, Match,
                              MatrixEntry, ModelSpec, Suite)
from bench.suite.tables import TableSpec, parse_table
from bench.suite.ctx import Ctx as _Ctx   # the name _checkpoint and the sections use
from bench.suite.yamlload import LineDict, load_yaml

SUITE_VERSION = 1
PRECISIONS = ("fp32", "bf16")

TOP_KEYS = {"version", "name", "description", "seed", "precision", "compile", "compile_mode", "defaults",
            "datasets", "models", "attacks", "matrix", "tables", "executors"}
DATASET_KEYS = {"plugin", "train_subset", "description"}
MODEL_KEYS = {"dataset", "arch", "arch_config", "defense", "defense_config", "train", "seed",
              "label", "base", "checkpoint", "description"}
ATTACK_KEYS = {"plugin", "config", "label", "base", "description"}
ENTRY_KEYS = {"name", "tags", "models", "attacks", "eps", "eval", "smoke", "seed", "include",
              "exclude", "description"}
MATCH_KEYS = {"model", "attack", "eps"}
CHECKPOINT_KEYS = {"url", "sha256"}
MAX_CELLS_PER_ENTRY = 100_000   # models × attacks × ε of one matrix entry
WHOLE_VALUES = {"checkpoint"}   # `base:` replaces these whole (no sha256 inherited for another url)


def _merge(base: dict, over: dict) -> LineDict:
    out = LineDict()
    out.line = getattr(over, "line", 0)
    out.key_lines = dict(getattr(base, "key_lines", {}))
    out.key_lines.update(getattr(over, "key_lines", {}))
    for k, v in base.items():
        out[k] = v
    for k, v in over.items():
        if k == "base":
            continue
        if isinstance(v, dict) and isinstance(out.get(k), dict) and k not in WHOLE_VALUES:
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def _resolve_bases(ctx: _Ctx, section: LineDict, what: str) -> dict[str, LineDict]:
    out: dict[str, LineDict] = {}

    def resolve(name: str, stack: list[str]) -> LineDict:
        if name in out:
            return out[name]
        node = ctx.mapping(section[name], f"{what}.{name}", section, name)
        base = node.get("base")
        if base is None:
            out[name] = node
            return node
        if not isinstance(base, str) or base not in section:
            ctx.err(node, "base", f"unknown {what[:-1]} {base!r}"
                    f"{did_you_mean(str(base), list(section))}", f"{what}.{name}.base")
        if base in stack:
            ctx.err(node, "base", "circular base: " + " → ".join(stack + [base]), f"{what}.{name}.base")
        merged = _merge(resolve(base, stack + [base]), node)
        out[name] = merged
        return merged

    for name in section:
        resolve(name, [name])
    return out


def _checkpoint(ctx: _Ctx, node: LineDict, where: str) -> str | RemoteCheckpoint | None:
    """A model's `checkpoint:`: a path, or {url, sha256?, max_mb?, timeout_s?} (validated here,
    fetched by the worker within those bounds: `bench.checkpoints.sources`)."""
    from bench.checkpoints.sources import LIMITS, limit_problem
    raw = node.get("checkpoint")
    at = f"{where}.checkpoint"
    if raw is None:
        return None
    if isinstance(raw, str):
        if not raw.strip():
            ctx.err(node, "checkpoint", "must be a path or {url, sha256}, got an empty string", at)
        return raw
    if not isinstance(raw, dict):
        ctx.err(node, "checkpoint", f"must be a path or a mapping {{url, sha256}}, got {raw!r}", at)
    ctx.check_keys(raw, CHECKPOINT_KEYS | set(LIMITS), at)
    if "url" not in raw:
        ctx.err(node, "checkpoint", "needs a 'url' (and, to pin the file, its 'sha256')", at)
    url = raw["url"]
    if not isinstance(url, str):
        ctx.err(raw, "url", f"must be a URL string, got {url!r}", f"{at}.url")
    problem = url_problem(url)
    if problem:
        ctx.err(raw, "url", problem, f"{at}.url")
    sha = raw.get("sha256")
    if sha is not None:
        if not isinstance(sha, str):
            ctx.err(raw, "sha256", f"must be 64 hexadecimal characters in quotes, got {sha!r}", f"{at}.sha256")
        sha = sha.strip().lower()
        if not SHA256_RE.match(sha):
            ctx.err(raw, "sha256", f"must be 64 hexadecimal characters, got {raw['sha256']!r} "
                    f"({len(raw['sha256'].strip())} characters)", f"{at}.sha256")
    bounds = {}
    for key in LIMITS:
        if key in raw:
            problem = limit_problem(key, raw[key])
            if problem:
                ctx.err(raw, key, problem, f"{at}.{key}")
            bounds[key] = float(raw[key])
    return RemoteCheckpoint(url, sha, **bounds)


def load_suite(path: str | Path, text: str | None = None) -> Suite:
    """Read and validate a suite file (or `text` as if it were that file); one located
    SuiteError on the first problem, in the order the sections are read below."""
    path = str(path)
    raw = load_yaml(path, text)
    ctx = _Ctx(path)
    if not isinstance(raw, dict):
        raise SuiteError("the suite must be a YAML mapping", file=path, line=1)
    ctx.check_keys(raw, TOP_KEYS, "")
    version = ctx.typed(raw, "version", int, "version", SUITE_VERSION)
    if version != SUITE_VERSION:
        ctx.err(raw, "version", f"unsupported suite version {version} (this bench reads {SUITE_VERSION})")
    seed = ctx.seed(raw, "seed", "seed", 0)
    precision = ctx.typed(raw, "precision", str, "precision", "fp32")
    if precision not in PRECISIONS:
        ctx.err(raw, "precision", f"must be one of {', '.join(PRECISIONS)}"
                f"{did_you_mean(precision, list(PRECISIONS))}")
    compile_ = ctx.typed(raw, "compile", bool, "compile", False)
    compile_mode = ctx.typed(raw, "compile_mode", str, "compile_mode", "auto")
    if compile_mode not in COMPILE_MODES:
        ctx.err(raw, "compile_mode", f"must be one of {', '.join(COMPILE_MODES)}"
                f"{did_you_mean(compile_mode, list(COMPILE_MODES))}")

    defaults = ctx.mapping(raw.get("defaults"), "defaults", raw, "defaults")
    ctx.check_keys(defaults, {"train", "eval"}, "defaults")
    d_train = ctx.mapping(defaults.get("train"), "defaults.train", defaults, "train")
    d_eval = ctx.mapping(defaults.get("eval"), "defaults.eval", defaults, "eval")

    datasets = _datasets(ctx, raw)
    attacks = _attacks(ctx, raw)
    m_node = ctx.mapping(raw.get("models"), "models", raw, "models")
    for name in m_node:
        ctx.name(m_node, name, name, "model", f"models.{name}")
    models = {name: _model(ctx, name, node, datasets, attacks, d_train, seed, precision)
              for name, node in _resolve_bases(ctx, m_node, "models").items()}
    _link_init_from(ctx, m_node, models)
    matrix, all_tags = _matrix(ctx, raw, models, attacks, d_eval)
    tables = _tables(ctx, raw, models, attacks)
    executors = _executors(ctx, raw)

    text_bytes = Path(path).read_bytes() if text is None else text.encode()
    suite_name = ctx.typed(raw, "name", str, "name", Path(path).stem)
    if len(suite_name) > 200:
        ctx.err(raw, "name", "must be at most 200 characters", "name")
    suite = Suite(path, suite_name, seed, precision, compile_,
                  datasets, models, attacks, matrix, tables,
                  sha256=hashlib.sha256(text_bytes).hexdigest(), tags=all_tags,
                  compile_mode=compile_mode, executors=executors)
    return suite


def _datasets(ctx: _Ctx, raw: LineDict) -> dict[str, DatasetSpec]:
    """`datasets:` declares aliases; every dataset plugin is also there under its own name."""
    datasets: dict[str, DatasetSpec] = {n: DatasetSpec(n, n) for n in DATASETS.names()}
    ds_node = ctx.mapping(raw.get("datasets"), "datasets", raw, "datasets")
    for name, node in ds_node.items():
        ctx.name(ds_node, name, name, "dataset", f"datasets.{name}")
        node = ctx.mapping(node, f"datasets.{name}", ds_node, name)
        ctx.check_keys(node, DATASET_KEYS, f"datasets.{name}")
        plugin = node.get("plugin", name)
        ctx.plugin(DATASETS, plugin, node if "plugin" in node else ds_node,
                   "plugin" if "plugin" in node else name, f"datasets.{name}.plugin")
        subset = ctx.typed(node, "train_subset", int, f"datasets.{name}")
        if subset is not None and subset < 1:
            ctx.err(node, "train_subset", "must be ≥ 1", f"datasets.{name}.train_subset")
        datasets[name] = DatasetSpec(name, plugin, subset)
    return datasets


def _attacks(ctx: _Ctx, raw: LineDict) -> dict[str, AttackSpec]:
    attacks: dict[str, AttackSpec] = {}
    at_node = ctx.mapping(raw.get("attacks"), "attacks", raw, "attacks")
    for name in at_node:
        ctx.name(at_node, name, name, "attack", f"attacks.{name}")
    for name, node in _resolve_bases(ctx, at_node, "attacks").items():
        where = f"attacks.{name}"
        ctx.check_keys(node, ATTACK_KEYS, where)
        if "plugin" not in node:
            ctx.err(node, None, "needs a 'plugin'", where)
        cls = ctx.plugin(ATTACKS, node["plugin"], node, "plugin", f"{where}.plugin")
        cfg = ctx.config(cls.Config, node.get("config"), node, "config", f"{where}.config")
        label = ctx.typed(node, "label", str, where, name)
        attacks[name] = AttackSpec(name, node["plugin"], cfg, label)
    return attacks


def _model(ctx: _Ctx, name: str, node: LineDict, datasets: dict[str, DatasetSpec],
           attacks: dict[str, AttackSpec], d_train: LineDict, seed: int, precision: str) -> ModelSpec:
    """One entry of `models:` (its `base:` already merged in)."""
    where = f"models.{name}"
    ctx.check_keys(node, MODEL_KEYS, where)
    for req in ("dataset", "arch"):
        if req not in node:
            ctx.err(node, None, f"needs a '{req}'", where)
    ckpt = _checkpoint(ctx, node, where)
    if "defense" not in node and ckpt is None:
        ctx.err(node, None, "needs a 'defense' (or a 'checkpoint' to evaluate released weights)", where)
    ds = ctx.ref(node, "dataset", node["dataset"], datasets, "dataset", f"{where}.dataset")
    from bench.plugins.model import model_config
    arch = node["arch"]
    if not isinstance(arch, str):
        ctx.err(node, "arch", f"must be an architecture name, got {arch!r}", f"{where}.arch")
    try:
        _, arch_cfg = model_config(arch, node.get("arch_config"))
    except PluginError as e:
        ctx.err(node, "arch", str(e), f"{where}.arch")
    except ConfigError as e:
        ctx.err(node, "arch_config", e.message, f"{where}.arch_config.{e.path}")
    defense = node.get("defense", EXTERNAL_DEFENSE)
    if defense == EXTERNAL_DEFENSE:
        if ckpt is None:
            ctx.err(node, "defense", f"'{EXTERNAL_DEFENSE}' is the defense of a released checkpoint: "
                    "it needs a 'checkpoint'", f"{where}.defense")
        if node.get("defense_config") is not None:
            ctx.err(node, "defense_config", "a released checkpoint has no defense to configure",
                    f"{where}.defense_config")
        dcfg = None
    else:
        dcls = ctx.plugin(DEFENSES, defense, node, "defense", f"{where}.defense")
        dcfg = ctx.config(dcls.Config, node.get("defense_config"), node, "defense_config",
                          f"{where}.defense_config")
    train_raw = _merge(d_train, ctx.mapping(node.get("train"), f"{where}.train", node, "train"))
    tcfg = ctx.config(TrainConfig, train_raw, node, "train", f"{where}.train")
    es_attack = None
    if tcfg.early_stopping is not None:
        an = tcfg.early_stopping.attack
        if an not in attacks:
            ctx.err(node, "train", f"early_stopping.attack: unknown attack {an!r}"
                    f"{did_you_mean(an, list(attacks))}", f"{where}.train.early_stopping.attack")
        es_attack = attacks[an]
        es_eps = tcfg.early_stopping.eps
        for e in es_eps if isinstance(es_eps, list) else [es_eps]:
            ctx.eps(node, "train", e, f"{where}.train.early_stopping.eps")
    return ModelSpec(
        name=name, dataset=datasets[ds], arch=arch, arch_config=arch_cfg,
        defense=defense, defense_config=dcfg, train=tcfg,
        seed=ctx.seed(node, "seed", where, seed),
        label=ctx.typed(node, "label", str, where, name), checkpoint=ckpt,
        precision=precision, early_stopping_attack=es_attack)


def _link_init_from(ctx: _Ctx, m_node: LineDict, models: dict[str, ModelSpec]) -> None:
    """Fine-tuning from another model of the suite: train.init_from: "model:NAME"."""
    for name, spec in models.items():
        ref = spec.train.init_from
        if ref and ref.startswith("model:"):
            target, chain = ref[len("model:"):], [name]
            node = m_node[name] if name in m_node else m_node
            if target not in models:
                ctx.err(node, "train", f"init_from: unknown model {target!r}{did_you_mean(target, list(models))}",
                        f"models.{name}.train.init_from")
            t = target
            while t is not None:
                if t in chain:
                    ctx.err(node, "train", "circular init_from: " + " → ".join(chain + [t]),
                            f"models.{name}.train.init_from")
                chain.append(t)
                nxt = models[t].train.init_from
                t = nxt[len("model:"):] if nxt and nxt.startswith("model:") else None
            spec.init_model = models[target]


def _matrix(ctx: _Ctx, raw: LineDict, models: dict[str, ModelSpec], attacks: dict[str, AttackSpec],
            d_eval: LineDict) -> tuple[list[MatrixEntry], set[str]]:
    """`matrix:` → its entries, and every tag they use."""
    matrix: list[MatrixEntry] = []
    mx = raw.get("matrix", [])
    if not isinstance(mx, list):
        ctx.err(raw, "matrix", "must be a list of entries", "matrix")
    seen_entries: dict[str, int] = {}
    all_tags: set[str] = set()
    for i, node in enumerate(mx):
        node = ctx.mapping(node, f"matrix[{i}]", mx, i)
        name = ctx.typed(node, "name", str, f"matrix[{i}]", f"entry{i}")
        ctx.name(node, "name", name, "matrix entry", f"matrix[{i}].name")
        where = f"matrix.{name}"
        if name in seen_entries:
            ctx.err(node, "name", f"duplicate matrix entry name {name!r} (also entry {seen_entries[name]})", where)
        seen_entries[name] = i
        entry = _matrix_entry(ctx, node, name, models, attacks, d_eval)
        all_tags.update(entry.tags)
        matrix.append(entry)
    return matrix, all_tags


def _matrix_entry(ctx: _Ctx, node: LineDict, name: str, models: dict[str, ModelSpec],
                  attacks: dict[str, AttackSpec], d_eval: LineDict) -> MatrixEntry:
    where = f"matrix.{name}"
    ctx.check_keys(node, ENTRY_KEYS, where)
    tags = ctx.list_of_str(node, "tags", where)
    mnames = ctx.list_of_str(node, "models", where)
    anames = ctx.list_of_str(node, "attacks", where)
    for key, names, known in (("models", mnames, models), ("attacks", anames, attacks)):
        if not names:
            ctx.err(node, key if key in node else None, f"needs at least one of '{key}'", f"{where}.{key}")
        for n in names:
            ctx.ref(node, key, n, known, key[:-1], f"{where}.{key}")
    eps_raw = node.get("eps", [0])
    eps_list_raw = eps_raw if isinstance(eps_raw, list) else [eps_raw]
    eps_list = [ctx.eps(node, "eps", e, f"{where}.eps") for e in eps_list_raw]
    if not eps_list:
        ctx.err(node, "eps", "must list at least one ε", f"{where}.eps")
    n_cells = len(mnames) * len(anames) * len(eps_list)
    if n_cells > MAX_CELLS_PER_ENTRY:
        ctx.err(node, "eps", f"names {n_cells:,} combinations of models, attacks and ε; at most "
                f"{MAX_CELLS_PER_ENTRY:,} per entry", where)
    eval_raw = _merge(d_eval, ctx.mapping(node.get("eval"), f"{where}.eval", node, "eval"))
    ecfg = ctx.config(EvalConfig, eval_raw, node, "eval", f"{where}.eval")
    smoke = ctx.typed(node, "smoke", bool, where, False)
    eseed = ctx.seed(node, "seed", where, None)
    include = [(m.model, m.attack, m.eps)
               for m in _matches(ctx, node, "include", where, models, attacks, complete=True)]
    exclude = _matches(ctx, node, "exclude", where, models, attacks, complete=False)
    return MatrixEntry(name, tags, mnames, anames, eps_list, ecfg, smoke, eseed, include, exclude)


def _matches(ctx: _Ctx, node: LineDict, key: str, where: str, models: dict[str, ModelSpec],
             attacks: dict[str, AttackSpec], *, complete: bool) -> list[Match]:
    """include (complete: model, attack and eps all given) or exclude (any subset)."""
    items = node.get(key, [])
    shape = "{model, attack, eps}" if complete else "{model?, attack?, eps?}"
    if not isinstance(items, list):
        ctx.err(node, key, f"must be a list of {shape}", f"{where}.{key}")
    out = []
    for j, it in enumerate(items):
        at = f"{where}.{key}[{j}]"
        it = ctx.mapping(it, at, items, j)
        ctx.check_keys(it, MATCH_KEYS, at)
        missing = [k for k in ("model", "attack", "eps") if k not in it]
        if complete and missing:
            ctx.err(it, None, f"needs '{missing[0]}'", at)
        if not it:
            ctx.err(items, j, "an empty exclude would drop every cell", at)
        if "model" in it:
            ctx.ref(it, "model", it["model"], models, "model", f"{at}.model")
        if "attack" in it:
            ctx.ref(it, "attack", it["attack"], attacks, "attack", f"{at}.attack")
        out.append(Match(it.get("model"), it.get("attack"),
                         ctx.eps(it, "eps", it["eps"], f"{at}.eps") if "eps" in it else None))
    return out


def _tables(ctx: _Ctx, raw: LineDict, models: dict[str, ModelSpec],
            attacks: dict[str, AttackSpec]) -> dict[str, TableSpec]:
    """`tables:` (bench.suite.tables)."""
    tables: dict[str, TableSpec] = {}
    t_node = ctx.mapping(raw.get("tables"), "tables", raw, "tables")
    for order, (name, node) in enumerate(t_node.items()):
        ctx.name(t_node, name, name, "table", f"tables.{name}")
        node = ctx.mapping(node, f"tables.{name}", t_node, name)
        tables[name] = parse_table(ctx, name, node, order, models, attacks)
    return tables


def _executors(ctx: _Ctx, raw: LineDict) -> dict[str, dict]:
    """`executors: {slurm: {partition: gpu, time_min: 720}}`: each checked against the
    executor's typed Config; kept as written (the command line may still override)."""
    from bench.plugins.registry import EXECUTORS
    node = ctx.mapping(raw.get("executors"), "executors", raw, "executors")
    out: dict[str, dict] = {}
    for name, opts in node.items():
        where = f"executors.{name}"
        cls = ctx.plugin(EXECUTORS, name, node, name, where)
        opts = ctx.mapping(opts, where, node, name)
        ctx.config(cls.Config, opts, node, name, where)
        out[name] = copy.deepcopy(dict(opts))
    return out
