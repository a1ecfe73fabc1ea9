"""bench.errors.one_line: every exception as one printable line, the options its callers use."""

from __future__ import annotations

from bench.errors import BenchError, one_line


def _raised(e: BaseException) -> BaseException:
    try:
        raise e
    except BaseException as caught:  # noqa: BLE001 - the exception is the value under test
        return caught


def test_a_foreign_exception_is_its_type_and_first_line():
    assert one_line(ValueError("bad shape\n  and a second line")) == "ValueError: bad shape"
    assert one_line(ValueError("")) == "ValueError"
    assert one_line(ValueError("\x1b[2Jcleared")) == "ValueError: \\x1b[2Jcleared"


def test_limit_cuts_and_none_keeps_the_whole_line():
    sentence = "a checkpoint sentence " * 30
    assert one_line(BenchError(sentence), limit=50) == sentence[:49] + "…"
    assert one_line(BenchError(sentence), limit=None) == sentence


def test_where_names_the_innermost_frame_of_a_foreign_exception_only():
    line = _raised.__code__.co_firstlineno + 2          # the `raise e` above
    assert one_line(_raised(KeyError("x")), where=True) == f"KeyError: 'x' (at test_errors.py:{line})"
    assert one_line(_raised(BenchError("one sentence.")), where=True) == "one sentence."
    assert one_line(KeyError("x"), where=True) == "KeyError: 'x'"     # never raised: no frame
    cut = one_line(_raised(ValueError("v" * 100)), limit=20, where=True)
    assert cut == "ValueError: vvvvvvv…" + f" (at test_errors.py:{line})"
