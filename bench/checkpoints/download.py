"""Released checkpoints named by URL: downloaded once into the checkpoint cache, bounded, verified.

A model declared with `checkpoint: {url: …, sha256: …, max_mb: …, timeout_s: …}` is
obtained by `fetch_checkpoint`:

* a `file://` URL names a local file: it is read in place, never copied into the cache
  (a regular file no larger than the cap, checked against `sha256` when one is known;
  `bench.checkpoints.sources`);
* an http(s) URL is fetched into `<results-dir>/checkpoints/downloads/` with the standard
  library's urllib, through an opener that knows http and https only, redirects included
  (a redirect to ftp://, file:// or anything else is refused);
* the download is bounded: a Content-Length above the cap (`max_mb`, default 1000 MB) is
  refused before reading, a body that runs past it is cut off, and the whole download
  (connect, redirects, headers, body) has an overall deadline (`timeout_s`, default 30
  min) besides the per-read socket timeout: a watchdog shuts the connection's sockets down
  when it passes, so a server trickling a byte every few seconds cannot hold a worker;
* the body is streamed into a temporary file beside its final name (`bench.atomic`,
  locked while it is written) and hashed on the way; only a complete, verified file is
  renamed into place, and every failure (error, cap, deadline, mismatch, Ctrl-C) removes
  the temporary; a partial file that a killed run left (older than STALE_S and not
  locked by a live download) is removed at the next download into that folder;
* with a `sha256` in the suite, a file with another hash is refused; without one, the
  first download's hash is recorded, in `manifest.json` (keyed by the cached file's name)
  and (by the worker) in the results database's model record, and any later download that
  differs is refused (trust on first use; pinning the hash in suite.yaml accepts a new one);
* a cached file is re-hashed before each use; one that no longer matches its expected hash
  is downloaded again (and must then match);
* `offline=True` never opens a connection: a file that is not cached is one sentence.

Credentials in the URL (user:password@) are sent as HTTP Basic authorization to the first
host only (not across redirects); the URL is stored and shown only through `redact_url`.
Every failure is a `CheckpointError` of one sentence naming the redacted URL.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import http.client
import json
import os
import re
import socket
import stat
import sys
import time
import urllib.error
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from bench.atomic import TMP_MARK, atomic_open, atomic_write_text
from bench.checkpoints.opener import FOLLOWED, RedirectRefused, Watchdog, http_opener, request_for
from bench.checkpoints.sources import (DEADLINE_S, MAX_MB, MB, cap_bytes, file_url_path, hash_local, mb,
                                       redact_url, scrub)
from bench.errors import CheckpointError, one_line

SCHEMES = ("http", "https", "file")      # what a suite may name
TIMEOUT_S = 60.0            # per blocking socket operation (connect, each read); the deadline bounds the whole
CHUNK = 1 << 20
STALE_S = 600.0             # a partial file untouched this long, and unlocked, belongs to a killed run
MANIFEST = "manifest.json"
MANIFEST_VERSION = 2        # 2: keyed by the cached file's name, URLs redacted (1: keyed by the URL)
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class RemoteCheckpoint:
    """`checkpoint: {url, sha256, max_mb, timeout_s}` of a model in suite.yaml (sha256
    lower-case hex or None). The bounds do not change the weights, so they are not part
    of `resolved()` (the model key)."""

    url: str
    sha256: str | None = None
    max_mb: float = MAX_MB
    timeout_s: float = DEADLINE_S

    def resolved(self) -> dict:
        return {"url": self.url, "sha256": self.sha256}

    @property
    def max_bytes(self) -> int:
        return cap_bytes(self.max_mb)

    @property
    def shown(self) -> str:
        return redact_url(self.url)


def url_problem(url: str) -> str | None:
    """Why `url` cannot name a checkpoint (for the suite's located error), or None."""
    parts = urllib.parse.urlsplit(url)
    shown = redact_url(url)
    if parts.scheme not in SCHEMES:
        got = f"{parts.scheme!r}" if parts.scheme else "no scheme"
        return f"only {', '.join(SCHEMES)} URLs are supported, got {got}"
    if parts.scheme != "file" and not parts.hostname:
        return f"{shown!r} names no host"
    if parts.scheme == "file" and not parts.path:
        return f"{shown!r} names no file"
    if parts.path.endswith("/") or not Path(urllib.parse.unquote(parts.path)).name:
        return f"{shown!r} names a folder, not a file"
    return None


def cache_name(url: str) -> str:
    """The cached file's name: a hash of the whole URL (many releases are all `model_best.pt`;
    not reversible, so a secret in the URL stays out of it) and the URL's own file name,
    reduced to safe characters."""
    base = Path(urllib.parse.unquote(urllib.parse.urlsplit(url).path)).name
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", base)[-80:] or "checkpoint"
    return f"{hashlib.sha256(url.encode()).hexdigest()[:16]}-{base}"


# ------------------------------------------------------------------------- manifest

def read_manifest(cache_dir: Path) -> dict[str, dict]:
    """cached file name → {url (redacted), file, sha256, bytes, downloaded} (a version-1
    manifest is keyed by the URL instead; `manifest_entry` reads both)."""
    path = Path(cache_dir) / MANIFEST
    if not path.exists():
        return {}
    try:
        if path.stat().st_size > 16 * MB:
            raise ValueError
        data = json.loads(path.read_text())
        files = data["files"]
        if not isinstance(files, dict) or not all(isinstance(e, dict) for e in files.values()):
            raise ValueError
    except (ValueError, KeyError, TypeError, OSError):
        raise CheckpointError(f"the checkpoint cache's manifest {path} is not readable JSON of this "
                              f"bench; move it away (the recorded first-download hashes in it are then "
                              f"only in the results database)") from None
    return files


def manifest_entry(cache_dir: Path, url: str) -> dict | None:
    files = read_manifest(cache_dir)
    return files.get(cache_name(url)) or files.get(url)


def _record_in_manifest(cache_dir: Path, url: str, entry: dict) -> None:
    files = read_manifest(cache_dir)                 # re-read: another run may have added entries
    for key in [k for k in files if "://" in k]:     # version 1: keyed by the URL as written
        old = files.pop(key)
        old["url"] = redact_url(key)
        files.setdefault(str(old.get("file") or cache_name(key)), old)
    files[cache_name(url)] = entry
    atomic_write_text(cache_dir / MANIFEST,
                      json.dumps({"version": MANIFEST_VERSION, "files": files}, indent=1, sort_keys=True))


def remove_stale_partials(cache_dir: Path, log: Callable[[str], None], older_than: float = STALE_S) -> None:
    """Delete the partial downloads a killed run left in `cache_dir`: temporaries of
    `bench.atomic` and the `*.partPID` files of earlier versions, untouched for
    `older_than` seconds and not locked by a live download (which holds an flock)."""
    listed = {str(e.get("file")) for e in read_manifest(cache_dir).values()}
    now = time.time()
    for p in cache_dir.iterdir():
        if p.name in listed or not ((p.name.startswith(".") and TMP_MARK in p.name)
                                    or re.search(r"\.part\d+$", p.name)):
            continue
        try:
            st = p.lstat()
            if not stat.S_ISREG(st.st_mode) or now - st.st_mtime < older_than:
                continue
            fd = os.open(p, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)   # fails while its writer lives
            p.unlink()
            log(f"removed {p.name}, a partial download left by a killed run")
        except OSError:
            pass
        finally:
            os.close(fd)


# ------------------------------------------------------------------------- download

Log = Callable[[str], None]


def fetch_checkpoint(source: RemoteCheckpoint, cache_dir: Path | str, *, offline: bool = False,
                     recorded_sha256: str | None = None, log: Log | None = None,
                     progress: bool = False, timeout: float = TIMEOUT_S) -> tuple[Path, str]:
    """The verified local file of `source` (downloading it when needed) and its sha256.

    `recorded_sha256` is the hash the caller recorded at the first download (the results
    database's model record); it, else the manifest's, is what a file must match when the
    suite gives no sha256. Raises CheckpointError (one sentence) on any failure."""
    log = log or (lambda s: None)
    url, shown = source.url, source.shown
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme == "file":                  # read in place: nothing local enters the cache
        path = file_url_path(url)
        expected, why = _expected(source, recorded_sha256, None)
        got = hash_local(path, source.max_bytes)
        if expected is not None and got != expected:
            raise CheckpointError(f"the checkpoint file {path} has sha256 {got}, but {why} is "
                                  f"{expected}; refused")
        return path, got
    if scheme not in FOLLOWED:
        raise CheckpointError(f"the checkpoint {shown} is not an http or https URL; only those are downloaded")

    cache_dir = Path(cache_dir)
    path = cache_dir / cache_name(url)
    entry = manifest_entry(cache_dir, url) if cache_dir.exists() else None
    expected, why = _expected(source, recorded_sha256, entry)

    if path.exists() or path.is_symlink():
        got = hash_local(path, source.max_bytes)
        if expected is None or got == expected:
            if entry is None or entry.get("sha256") != got or entry.get("url") != shown:
                _record_in_manifest(cache_dir, url, _entry(path, got, shown))
            return path, got
        stale = f"the cached checkpoint {path} of {shown} no longer matches {why} ({got[:12]}… ≠ {expected[:12]}…)"
        if offline:
            raise CheckpointError(f"{stale} and --offline forbids downloading it again")
        log(f"warning: {stale}; downloading it again")
        path.unlink()
    elif offline:
        raise CheckpointError(f"the checkpoint {shown} is not in the checkpoint cache {cache_dir} "
                              f"and --offline forbids downloading it")

    cache_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(cache_dir, log)
    # the temporary is removed on every failure (atomic_open), Ctrl-C included
    with atomic_open(path, "wb") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)       # tells remove_stale_partials it is alive
        got = _download(source, f, log=log, progress=progress, timeout=timeout)
        if expected is not None and got != expected:
            raise CheckpointError(f"the checkpoint downloaded from {shown} has sha256 {got}, but "
                                  f"{why} is {expected}; refused (the file was not kept)")
    _record_in_manifest(cache_dir, url, _entry(path, got, shown))
    if expected is None:
        log(f"recorded sha256 {got} of {shown} (first download; pin it in suite.yaml to be explicit)")
    return path, got


def _expected(source: RemoteCheckpoint, recorded: str | None, entry: dict | None):
    """(hash a file must have, how to name it in a message), or (None, "") on first use."""
    if source.sha256:
        return source.sha256, "the sha256 the suite declares"
    if recorded:
        return recorded, "the sha256 recorded at its first download (results database)"
    if entry and entry.get("sha256"):
        when = entry.get("downloaded", "?")
        return entry["sha256"], f"the sha256 recorded at its first download ({MANIFEST}, {when})"
    return None, ""


def _entry(path: Path, sha: str, shown: str) -> dict:
    return {"url": shown, "file": path.name, "sha256": sha, "bytes": path.stat().st_size,
            "downloaded": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}


def _download(source: RemoteCheckpoint, f, *, log: Log, progress: bool, timeout: float) -> str:
    """Stream `source.url` into the open file `f`, within its cap and deadline; return its
    sha256. One-sentence CheckpointError on failure."""
    url, shown, cap, deadline = source.url, source.shown, source.max_bytes, source.timeout_s
    limits = "(raise `max_mb` in its `checkpoint:` if the file is genuine)"
    n = 0

    def fail(why: str):
        raise CheckpointError(f"downloading the checkpoint {shown} failed: {scrub(why, url)}")

    def late():
        fail(f"not complete within its deadline of {deadline:g} s ({mb(n)} received; "
             f"raise `timeout_s` in its `checkpoint:` for a slow server)")

    watch = Watchdog(deadline)
    per_op = min(timeout, deadline)
    try:
        try:
            resp = http_opener(watch).open(request_for(url), timeout=per_op)
        except RedirectRefused as e:
            fail(f"the server redirected it to {redact_url(e.target)}; only http and https are followed")
        except urllib.error.HTTPError as e:
            e.close()
            fail(f"HTTP {e.code} {e.reason}")
        except Exception as e:              # URLError, timeouts, resets, malformed answers
            if watch.expired:
                late()
            reason = e.reason if isinstance(e, urllib.error.URLError) else e
            if isinstance(reason, (TimeoutError, socket.timeout)):
                fail(f"no answer within {per_op:g} s")
            if isinstance(e, (OSError, ValueError, http.client.HTTPException)):
                fail(str(getattr(reason, "strerror", None) or reason)
                     if isinstance(e, urllib.error.URLError) else one_line(e, limit=240))
            raise
        with resp:
            ctype = (resp.headers.get("Content-Type") or "").split(";")[0].strip().lower()
            if ctype == "text/html":
                fail("the server sent an HTML page (Content-Type text/html), not a checkpoint file "
                     "(Google Drive sends one for large files: use a direct-download URL)")
            total = _content_length(resp.headers.get("Content-Length"))
            if total is not None and total > cap:
                fail(f"the server announces {mb(total)} (Content-Length), more than the cap of "
                     f"{mb(cap)} {limits}; nothing was read")
            log(f"downloading {shown} ({mb(total) if total is not None else 'size unknown'})")
            h = hashlib.sha256()
            name = Path(urllib.parse.unquote(urllib.parse.urlsplit(url).path)).name
            try:
                while chunk := resp.read1(CHUNK):
                    if n + len(chunk) > cap:
                        fail(f"the body runs past the cap of {mb(cap)} {limits}; the partial file was removed")
                    f.write(chunk)
                    h.update(chunk)
                    n += len(chunk)
                    if watch.expired:
                        late()
                    if progress:
                        shown_n = f"{mb(n)} of {mb(total)}" if total else mb(n)
                        print(f"\r  {name}: {shown_n}", end="", file=sys.stderr, flush=True)
            except (TimeoutError, socket.timeout):
                if watch.expired:
                    late()
                fail(f"no data for {per_op:g} s after {n} bytes")
            except (OSError, http.client.HTTPException) as e:  # reset, IncompleteRead, disk full
                if watch.expired:
                    late()
                fail(one_line(e, limit=240))
            finally:
                if progress:
                    print(file=sys.stderr, flush=True)
        if watch.expired:                   # the watchdog's shutdown can look like a clean end
            late()
    finally:
        watch.stop()
    if total is not None and n != total:
        fail(f"the body ended after {n} of the {total} bytes its Content-Length announced")
    if n == 0:
        fail("the server sent an empty file")
    log(f"downloaded {mb(n)} from {shown}")
    return h.hexdigest()


def _content_length(value: str | None) -> int | None:
    try:
        n = int(value) if value is not None else None
    except ValueError:
        return None
    return n if n is None or n >= 0 else None
