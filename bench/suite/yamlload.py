"""A YAML loader that remembers the line of every mapping key and list item.

Validation errors can then name the file, the line and the key. Duplicate keys in
one mapping are an error (PyYAML silently keeps the last one).
"""

from __future__ import annotations

from pathlib import Path

import yaml

from bench.errors import SuiteError


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


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> LineDict:
    loader.flatten_mapping(node)
    out = LineDict()
    out.line = node.start_mark.line + 1
    out.key_lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in out.key_lines:
            raise SuiteError(f"duplicate key {key!r} (first at line {out.key_lines[key]})",
                             file=loader.filename, line=key_node.start_mark.line + 1, key=str(key))
        out[key] = loader.construct_object(value_node, deep=True)
        out.key_lines[key] = key_node.start_mark.line + 1
    return out


def _construct_sequence(loader: _Loader, node: yaml.SequenceNode) -> LineList:
    out = LineList(loader.construct_object(n, deep=True) for n in node.value)
    out.line = node.start_mark.line + 1
    out.item_lines = [n.start_mark.line + 1 for n in node.value]
    return out


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_sequence)


def load_yaml(path: str | Path, text: str | None = None):
    path = str(path)
    if text is None:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as e:
            raise SuiteError(f"cannot read the suite file ({e.strerror})", file=path) from None
        except UnicodeDecodeError as e:
            raise SuiteError(f"not a text file: byte {e.start} is not UTF-8 (a YAML suite "
                             f"file is UTF-8 text)", file=path) from None
    loader = _Loader(text)
    loader.filename = path
    try:
        return loader.get_single_data()
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        raise SuiteError(f"invalid YAML: {e.problem or e.context}", file=path,
                         line=mark.line + 1 if mark else None) from None
    except yaml.YAMLError as e:      # e.g. a ReaderError: control characters, not text
        raise SuiteError(f"invalid YAML: {' '.join(str(e).split())}", file=path) from None
    finally:
        loader.dispose()
