"""What a checkpoint source may be, how far bench reads it, and how it is shown.

* Bounds (issue 16 §2): a size cap (`max_mb`) and an overall deadline (`timeout_s`) per
  released checkpoint, settable in its `checkpoint:` mapping; `limit_problem` validates them.
* Local files (a `checkpoint:` path, a `file://` URL, a cached download) are read in place,
  only when they are regular files no larger than the cap (`open_regular`): a device such
  as /dev/zero, a FIFO or a folder is refused before a byte is read, and nothing local is
  ever copied into the download cache.
* `redact_url` is the one way a checkpoint URL is stored or shown (database, manifest,
  logs, errors, baselines, the site): user:password@ dropped, every query value and the
  fragment replaced by REDACTED (signed URLs carry their secret there: X-Amz-Signature,
  sig, token, key, …; all values go, which also covers names nobody listed). A secret
  inside the path itself cannot be recognised and is shown as written.
"""

from __future__ import annotations

import hashlib
import math
import os
import stat
import urllib.parse
import urllib.request
from pathlib import Path
from typing import BinaryIO

from bench.errors import CheckpointError, one_line

MB = 10 ** 6                # the unit of `max_mb` and of the progress lines
# The largest checkpoint the paper's tables name is a WRN-34-10 in fp32, ≈ 185 MB; a release
# that also keeps its optimizer state (momentum: one more copy) or a 28-10/34-20 variant
# stays well under 1 GB. 1000 MB leaves that margin yet stops an endless body after ~10 s
# of disk writes at today's 100–200 MB/s instead of at a full disk.
MAX_MB = 1000.0
# The cap at ~0.55 MB/s (a slow link) in 30 minutes; a server that trickles is cut off then.
DEADLINE_S = 1800.0
LIMITS = {"max_mb": "megabytes", "timeout_s": "seconds"}   # the `checkpoint:` keys that bound it
REDACTED = "REDACTED"
CHUNK = 1 << 20


def limit_problem(name: str, value: object) -> str | None:
    """Why `value` cannot be the `checkpoint:` bound `name` (max_mb, timeout_s), or None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value) or value <= 0:
        return f"must be a finite number of {LIMITS[name]} greater than 0, got {value!r}"
    return None


def cap_bytes(max_mb: float | None) -> int:
    return int((MAX_MB if max_mb is None else max_mb) * MB)


def mb(n: int | None) -> str:
    if n is None:
        return "?"
    return f"{n / MB:.1f} MB" if n >= MB // 10 else f"{n} bytes"


# ------------------------------------------------------------------------- redaction

def redact_url(url: str) -> str:
    """`url` as bench stores and shows it: without user:password@, with every query value
    and the fragment replaced by REDACTED (see the module docstring)."""
    try:
        p = urllib.parse.urlsplit(url)
    except ValueError:
        return "<a URL that cannot be parsed>"
    netloc = p.netloc.rpartition("@")[2]
    query = "&".join(_redact_pair(s) for s in p.query.split("&")) if p.query else ""
    return urllib.parse.urlunsplit((p.scheme, netloc, p.path, query, REDACTED if p.fragment else ""))


def _redact_pair(pair: str) -> str:
    if not pair:
        return pair
    name, eq, _ = pair.partition("=")
    return f"{name}={REDACTED}" if eq else REDACTED


def redacted_config(obj):
    """A resolved config with every `url` string in it redacted (what the database keeps;
    the keys are hashes of the config as written, so they do not change)."""
    if isinstance(obj, dict):
        return {k: redact_url(v) if k == "url" and isinstance(v, str) else redacted_config(v)
                for k, v in obj.items()}
    if isinstance(obj, list):
        return [redacted_config(v) for v in obj]
    return obj


def scrub(text: str, url: str) -> str:
    """`text` (an error from urllib or http.client) with `url` and its secret parts redacted."""
    text = text.replace(url, redact_url(url))
    try:
        p = urllib.parse.urlsplit(url)
    except ValueError:
        return text
    userinfo = p.netloc.rpartition("@")[0]
    secrets = [userinfo, *userinfo.split(":"), p.fragment]
    for pair in p.query.split("&"):
        value = pair.partition("=")[2] or pair
        secrets += [value, urllib.parse.unquote_plus(value)]
    for s in sorted({s for s in secrets if len(s) >= 3}, key=len, reverse=True):
        text = text.replace(s, REDACTED)
    return text


# ------------------------------------------------------------------------- local files

_KINDS = ((stat.S_ISDIR, "folder"), (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"),
          (stat.S_ISFIFO, "FIFO"), (stat.S_ISSOCK, "socket"))


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "special file")


def open_regular(path: str | os.PathLike, max_bytes: int) -> tuple[BinaryIO, int]:
    """`path` opened for reading, and its size, if it is a regular file of at most
    `max_bytes`; else one-sentence CheckpointError. Checked before opening (opening a
    device can have effects) and again on the open descriptor (the name may be swapped)."""
    p = os.fspath(path)

    def check(st: os.stat_result) -> None:
        if not stat.S_ISREG(st.st_mode):
            raise CheckpointError(f"checkpoint {p} is not a regular file (it is a {_kind(st.st_mode)}); "
                                  f"only checkpoint files are read")
        if st.st_size > max_bytes:
            raise CheckpointError(f"checkpoint {p} is {mb(st.st_size)}, more than the cap of "
                                  f"{mb(max_bytes)} (raise `max_mb` in its `checkpoint:` if it is genuine)")
    try:
        check(os.stat(p))
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {p} does not exist") from None
    except OSError as e:
        raise CheckpointError(f"checkpoint {p} cannot be read ({one_line(e)})") from None
    try:
        st = os.fstat(fd)
        check(st)
        return os.fdopen(fd, "rb"), st.st_size
    except BaseException:
        os.close(fd)
        raise


def _too_big(path, max_bytes: int) -> CheckpointError:
    return CheckpointError(f"checkpoint {os.fspath(path)} grew past the cap of {mb(max_bytes)} "
                           f"while it was read; refused")


def hash_local(path: str | os.PathLike, max_bytes: int) -> str:
    """The sha256 of a regular file of at most `max_bytes` (read in place, never copied)."""
    f, _ = open_regular(path, max_bytes)
    h, n = hashlib.sha256(), 0
    with f:
        while chunk := f.read(CHUNK):
            n += len(chunk)
            if n > max_bytes:
                raise _too_big(path, max_bytes)
            h.update(chunk)
    return h.hexdigest()


def read_local(path: str | os.PathLike, max_bytes: int) -> bytes:
    """The bytes of a regular file of at most `max_bytes`."""
    f, _ = open_regular(path, max_bytes)
    with f:
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise _too_big(path, max_bytes)
    return data


def file_url_path(url: str) -> Path:
    """The local path a `file://` URL names (a file on another host is refused)."""
    p = urllib.parse.urlsplit(url)
    host = (p.hostname or "").lower()
    if host not in ("", "localhost"):
        raise CheckpointError(f"the checkpoint {redact_url(url)} names a file on another host "
                              f"({host}); a file URL must name a local file")
    return Path(urllib.request.url2pathname(p.path))
