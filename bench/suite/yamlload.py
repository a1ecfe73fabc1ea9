"""A YAML loader that remembers the line of every mapping key and list item.

Validation errors can then name the file, the line and the key. Duplicate keys in
one mapping are an error (PyYAML silently keeps the last one); YAML merge keys
(`<<: *base`, then keys that override it) work as the YAML 1.1 merge-key spec says.

A suite may come from someone else, so the loader bounds what a small file can cost:
its size, its nesting depth, and the number of nodes once aliases are expanded (a
"billion laughs" document of a few hundred bytes is refused before anything is built,
since the plugin configs it names are later copied and hashed in full). Mapping keys are
text, strings hold no control characters, integers fit in 64 bits.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from bench.errors import SuiteError, printable

MAX_BYTES = 4 * 2**20        # 100× the repository's suite.yaml (38 kB)
MAX_NODES = 200_000          # after alias expansion; suite.yaml has 2,534
MAX_DEPTH = 50               # nesting, aliases expanded; suite.yaml nests 8 deep
MAX_INT_CHARS = 32           # the digits of a 64-bit integer, with room for '_' and signs
INT64 = (-2**63, 2**63 - 1)

MERGE_TAG = "tag:yaml.org,2002:merge"
VALUE_TAG = "tag:yaml.org,2002:value"
# tags SafeLoader knows that a suite never needs (sets, ordered maps, bytes)
REFUSED_TAGS = ("tag:yaml.org,2002:set", "tag:yaml.org,2002:omap", "tag:yaml.org,2002:pairs",
                "tag:yaml.org,2002:binary")
# C0 controls but tab and newline, DEL, C1 (as bench.errors.printable escapes them)
_CONTROL = {*range(0x00, 0x09), *range(0x0b, 0x20), 0x7f, *range(0x80, 0xa0)}


class LineDict(dict):
    """A dict from YAML: `.line` is where it starts; `.key_lines[k]` where key k is."""

    line: int = 0
    key_lines: dict

    def line_of(self, key) -> int:
        return self.key_lines.get(key, self.line)


class LineList(list):
    line: int = 0
    item_lines: list

    def line_of(self, i: int) -> int:
        return self.item_lines[i] if 0 <= i < len(self.item_lines) else self.line


class _Loader(yaml.SafeLoader):
    filename = "<suite>"
    depth = 0

    def fail(self, node_or_mark, message: str, key: str | None = None):
        mark = getattr(node_or_mark, "start_mark", node_or_mark)
        raise SuiteError(message, file=self.filename, line=mark.line + 1 if mark else None, key=key)

    def compose_node(self, parent, index):
        # the composer recurses once per level: bound it before Python's recursion limit does
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                self.fail(self.peek_event(), f"nested more than {MAX_DEPTH} levels deep")
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def _key_text(loader: _Loader, key_node: Node) -> str:
    if key_node.tag == VALUE_TAG:            # the '=' key of YAML 1.1: just text here
        return str(key_node.value)
    key = loader.construct_object(key_node, deep=True)
    if not isinstance(key, str):
        what = ("null" if key is None else f"{key!r} (YAML reads yes/no/on/off as true/false)"
                if isinstance(key, bool) else repr(key) if isinstance(key, (int, float))
                else "a list" if isinstance(key, list) else "a mapping" if isinstance(key, dict)
                else f"a {type(key).__name__}")
        loader.fail(key_node, f"a mapping key must be text, got {printable(what)[:80]}; put it in quotes")
    return key


def _construct_mapping(loader: _Loader, node: MappingNode) -> LineDict:
    own = LineDict()
    own.line = node.start_mark.line + 1
    own.key_lines = {}
    merged: list[LineDict] = []
    for key_node, value_node in node.value:
        if key_node.tag == MERGE_TAG:
            # applied in PyYAML's order (flatten_mapping): a list's later items first
            sources = value_node.value[::-1] if isinstance(value_node, SequenceNode) else [value_node]
            for s in sources:
                m = loader.construct_object(s, deep=True) if isinstance(s, MappingNode) else None
                if not isinstance(m, LineDict):
                    loader.fail(key_node, "'<<' merges a mapping (an alias such as *base) or a "
                                          "list of them", key="<<")
                merged.append(m)
            continue
        key = _key_text(loader, key_node)
        if key in own.key_lines:
            loader.fail(key_node, f"duplicate key {key!r} (first at line {own.key_lines[key]})", key=key)
        own[key] = loader.construct_object(value_node, deep=True)
        own.key_lines[key] = key_node.start_mark.line + 1
    if not merged:
        return own
    # YAML merge keys: the mapping's own keys win over merged ones, and the first mapping of
    # a `<<: [*a, *b]` list over the later; keys in PyYAML's order (the merged ones first)
    out = LineDict()
    out.line, out.key_lines = own.line, {}
    for m in merged:
        for k, v in m.items():
            out[k] = v
            out.key_lines[k] = m.line_of(k)
    for k, v in own.items():
        out[k] = v
        out.key_lines[k] = own.key_lines[k]
    return out


def _construct_sequence(loader: _Loader, node: SequenceNode) -> LineList:
    out = LineList(loader.construct_object(n, deep=True) for n in node.value)
    out.line = node.start_mark.line + 1
    out.item_lines = [n.start_mark.line + 1 for n in node.value]
    return out


def _construct_str(loader: _Loader, node: ScalarNode) -> str:
    text = loader.construct_scalar(node)
    bad = next((c for c in text if ord(c) in _CONTROL), None)
    if bad is not None:
        loader.fail(node, f"text may not hold control characters (found {printable(bad)} in "
                          f"'{printable(text)[:60]}')")
    return text


def _construct_int(loader: _Loader, node: ScalarNode) -> int:
    if len(str(node.value)) > MAX_INT_CHARS:      # before int(): 5,000 digits are slow or refused
        loader.fail(node, f"the integer {str(node.value)[:24]}… does not fit in 64 bits")
    value = yaml.SafeLoader.construct_yaml_int(loader, node)
    if not INT64[0] <= value <= INT64[1]:
        loader.fail(node, f"the integer {value} does not fit in 64 bits")
    return value


def _refused_tag(loader: _Loader, node: Node):
    loader.fail(node, f"the YAML tag {node.tag.rsplit(':', 1)[-1]!r} is not used in suites")


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_sequence)
_Loader.add_constructor("tag:yaml.org,2002:str", _construct_str)
_Loader.add_constructor("tag:yaml.org,2002:int", _construct_int)
for _tag in REFUSED_TAGS:
    _Loader.add_constructor(_tag, _refused_tag)


def _check_expansion(loader: _Loader, root: Node) -> None:
    """Refuse a node graph that is too big or too deep once its aliases are expanded, or
    that contains itself (an alias inside its own anchor): one pass, memoised per node,
    before anything is constructed."""
    sizes: dict[int, tuple[int, int]] = {}     # id(node) → (expanded nodes, expanded depth)
    path: list[Node] = []

    def visit(node: Node) -> tuple[int, int]:
        known = sizes.get(id(node))
        if known is not None:
            if len(path) + 1 + known[1] > MAX_DEPTH:
                loader.fail(node, f"nested more than {MAX_DEPTH} levels deep once its aliases "
                                  f"are expanded")
            return known
        if any(p is node for p in path):
            loader.fail(node, "an alias refers to a node that contains it (a recursive structure)")
        if len(path) >= MAX_DEPTH:
            loader.fail(node, f"nested more than {MAX_DEPTH} levels deep once its aliases are expanded")
        path.append(node)
        children = (node.value if isinstance(node, SequenceNode) else
                    [n for pair in node.value for n in pair] if isinstance(node, MappingNode) else [])
        count, depth = 1, 0
        for child in children:
            c, d = visit(child)
            count, depth = count + c, max(depth, d + 1)
            if count > MAX_NODES:
                loader.fail(node, f"more than {MAX_NODES:,} YAML nodes once its aliases are "
                                  f"expanded (an alias bomb?)")
        path.pop()
        sizes[id(node)] = (count, depth)
        return count, depth

    visit(root)


def _read(path: str) -> str:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_BYTES + 1)
    except OSError as e:
        raise SuiteError(f"cannot read the suite file ({e.strerror})", file=path) from None
    if len(data) > MAX_BYTES:
        raise SuiteError(f"the suite file is larger than {MAX_BYTES // 2**20} MiB", file=path)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SuiteError(f"not a text file: byte {e.start} is not UTF-8 (a YAML suite "
                         f"file is UTF-8 text)", file=path) from None


def load_yaml(path: str | Path, text: str | None = None):
    """The YAML document of the suite file `path` (or `text`, read as that file)."""
    path = str(path)
    if text is None:
        text = _read(path)
    elif len(text) > MAX_BYTES:
        raise SuiteError(f"the suite text is larger than {MAX_BYTES // 2**20} MiB", file=path)
    loader = None
    try:
        loader = _Loader(text)          # its reader already refuses unprintable characters
        loader.filename = path
        node = loader.get_single_node()
        if node is None:
            return None
        _check_expansion(loader, node)
        return loader.construct_document(node)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        raise SuiteError(f"invalid YAML: {e.problem or e.context}", file=path,
                         line=mark.line + 1 if mark else None) from None
    except yaml.YAMLError as e:      # e.g. a ReaderError: control characters, not text
        raise SuiteError(f"invalid YAML: {' '.join(str(e).split())}", file=path) from None
    finally:
        if loader is not None:
            loader.dispose()
