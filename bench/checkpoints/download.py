"""Released checkpoints named by URL: downloaded once into the checkpoint cache, verified.

A model declared with `checkpoint: {url: …, sha256: …}` is fetched by `fetch_checkpoint`
into `<results-dir>/checkpoints/downloads/` (the standard library's urllib, http(s) and
file URLs only, with a socket timeout and a progress line):

* the body is streamed into a temporary file beside its final name and hashed on the way;
  only a complete, verified file is renamed into place (`os.replace`), so the cache never
  holds half a file, and a refused file is deleted, never kept;
* with a `sha256` in the suite, a download with another hash is refused;
* without one, the first download's hash is recorded, in `manifest.json` beside the cached
  files and (by the worker) in the results database's model record, and any later download
  that differs is refused: the server now serves another file (trust on first use; pinning
  the new hash in suite.yaml is how a user accepts it);
* a cached file is re-hashed before each use; one that no longer matches its expected hash
  is downloaded again (and must then match);
* `offline=True` never opens a connection: a file that is not cached is one sentence.

Every failure is a `CheckpointError` of one sentence naming the URL: refused connections,
HTTP errors, timeouts, a body shorter than its Content-Length, an HTML page where a file
was expected (Google Drive's "can't scan for viruses" page for large files), a mismatch.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import http.client
import json
import os
import re
import socket
import sys
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from bench.checkpoints.cache import sha256_file
from bench.errors import CheckpointError

SCHEMES = ("http", "https", "file")
TIMEOUT_S = 60.0            # per blocking socket operation (connect, each read), not the whole file
CHUNK = 1 << 20
MANIFEST = "manifest.json"
MANIFEST_VERSION = 1
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
USER_AGENT = "bench-checkpoint-download (python urllib)"


@dataclass(frozen=True)
class RemoteCheckpoint:
    """`checkpoint: {url, sha256}` of a model in suite.yaml (sha256 lower-case hex or None)."""

    url: str
    sha256: str | None = None

    def resolved(self) -> dict:
        return {"url": self.url, "sha256": self.sha256}


def url_problem(url: str) -> str | None:
    """Why `url` cannot name a checkpoint (for the suite's located error), or None."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in SCHEMES:
        got = f"{parts.scheme!r}" if parts.scheme else "no scheme"
        return f"only {', '.join(SCHEMES)} URLs are supported, got {got}"
    if parts.scheme != "file" and not parts.hostname:
        return f"{url!r} names no host"
    if parts.scheme == "file" and not parts.path:
        return f"{url!r} names no file"
    if parts.path.endswith("/") or not Path(urllib.parse.unquote(parts.path)).name:
        return f"{url!r} names a folder, not a file"
    return None


def cache_name(url: str) -> str:
    """The cached file's name: a hash of the URL (many releases are all `model_best.pt`)
    and the URL's own file name, reduced to safe characters."""
    base = Path(urllib.parse.unquote(urllib.parse.urlsplit(url).path)).name
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", base)[-80:] or "checkpoint"
    return f"{hashlib.sha256(url.encode()).hexdigest()[:16]}-{base}"


# ------------------------------------------------------------------------- manifest

def read_manifest(cache_dir: Path) -> dict[str, dict]:
    """url → {file, sha256, bytes, downloaded} of the files in the cache."""
    path = cache_dir / MANIFEST
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
        files = data["files"]
        if not isinstance(files, dict):
            raise ValueError
    except (ValueError, KeyError, TypeError):
        raise CheckpointError(f"the checkpoint cache's manifest {path} is not readable JSON of this "
                              f"bench; move it away (the recorded first-download hashes in it are then "
                              f"only in the results database)") from None
    return files


def _record_in_manifest(cache_dir: Path, url: str, entry: dict) -> None:
    files = read_manifest(cache_dir)                 # re-read: another run may have added entries
    files[url] = entry
    tmp = cache_dir / f"{MANIFEST}.tmp{os.getpid()}"
    tmp.write_text(json.dumps({"version": MANIFEST_VERSION, "files": files}, indent=1, sort_keys=True))
    os.replace(tmp, cache_dir / MANIFEST)


# ------------------------------------------------------------------------- download

Log = Callable[[str], None]


def fetch_checkpoint(source: RemoteCheckpoint, cache_dir: Path | str, *, offline: bool = False,
                     recorded_sha256: str | None = None, log: Log | None = None,
                     progress: bool = False, timeout: float = TIMEOUT_S) -> tuple[Path, str]:
    """The verified local copy of `source` (downloading it when needed) and its sha256.

    `recorded_sha256` is the hash the caller recorded at the first download (the results
    database's model record); it, else the manifest's, is what a file must match when the
    suite gives no sha256. Raises CheckpointError (one sentence) on any failure."""
    log = log or (lambda s: None)
    cache_dir = Path(cache_dir)
    url = source.url
    path = cache_dir / cache_name(url)
    entry = read_manifest(cache_dir).get(url) if cache_dir.exists() else None
    expected, why = _expected(source, recorded_sha256, entry)

    if path.exists():
        got = sha256_file(path)
        if expected is None or got == expected:
            if entry is None or entry.get("sha256") != got:
                _record_in_manifest(cache_dir, url, _entry(path, got))
            return path, got
        stale = f"the cached checkpoint {path} of {url} no longer matches {why} ({got[:12]}… ≠ {expected[:12]}…)"
        if offline:
            raise CheckpointError(f"{stale} and --offline forbids downloading it again")
        log(f"warning: {stale}; downloading it again")
        path.unlink()
    elif offline:
        raise CheckpointError(f"the checkpoint {url} is not in the checkpoint cache {cache_dir} "
                              f"and --offline forbids downloading it")

    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.part{os.getpid()}")
    try:
        got = _download(url, tmp, log=log, progress=progress, timeout=timeout)
        if expected is not None and got != expected:
            raise CheckpointError(f"the checkpoint downloaded from {url} has sha256 {got}, but "
                                  f"{why} is {expected}; refused (the file was not kept)")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _record_in_manifest(cache_dir, url, _entry(path, got))
    if expected is None:
        log(f"recorded sha256 {got} of {url} (first download; pin it in suite.yaml to be explicit)")
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


def _entry(path: Path, sha: str) -> dict:
    return {"file": path.name, "sha256": sha, "bytes": path.stat().st_size,
            "downloaded": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}


def _download(url: str, dest: Path, *, log: Log, progress: bool, timeout: float) -> str:
    """Stream `url` into `dest`; return its sha256. One-sentence CheckpointError on failure."""
    def fail(why: str):
        raise CheckpointError(f"downloading the checkpoint {url} failed: {why}")

    req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as e:
        e.close()
        fail(f"HTTP {e.code} {e.reason}")
    except urllib.error.URLError as e:
        reason = e.reason
        if isinstance(reason, (TimeoutError, socket.timeout)):
            fail(f"no answer within {timeout:g} s")
        fail(str(getattr(reason, "strerror", None) or reason))
    except (TimeoutError, socket.timeout):
        fail(f"no answer within {timeout:g} s")
    except (OSError, ValueError, http.client.HTTPException) as e:  # malformed URL or answer, …
        fail(_oneline(e))

    with resp:
        ctype = (resp.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if ctype == "text/html":
            fail("the server sent an HTML page (Content-Type text/html), not a checkpoint file "
                 "(Google Drive sends one for large files: use a direct-download URL)")
        total = _content_length(resp.headers.get("Content-Length"))
        log(f"downloading {url} ({_mb(total) if total is not None else 'size unknown'})")
        h, n = hashlib.sha256(), 0
        try:
            with open(dest, "wb") as f:
                while True:
                    chunk = resp.read(CHUNK)
                    if not chunk:
                        break
                    f.write(chunk)
                    h.update(chunk)
                    n += len(chunk)
                    if progress:
                        shown = f"{_mb(n)} of {_mb(total)}" if total else _mb(n)
                        print(f"\r  {Path(urllib.parse.urlsplit(url).path).name}: {shown}",
                              end="", file=sys.stderr, flush=True)
        except (TimeoutError, socket.timeout):
            fail(f"no data for {timeout:g} s after {n} bytes")
        except (OSError, http.client.HTTPException) as e:   # connection reset, IncompleteRead, disk full
            fail(_oneline(e))
        finally:
            if progress:
                print(file=sys.stderr, flush=True)
    if total is not None and n != total:
        fail(f"the body ended after {n} of the {total} bytes its Content-Length announced")
    if n == 0:
        fail("the server sent an empty file")
    log(f"downloaded {_mb(n)} from {url}")
    return h.hexdigest()


def _content_length(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _mb(n: int | None) -> str:
    return "?" if n is None else f"{n / 1e6:.1f} MB"


def _oneline(e: BaseException) -> str:
    text = (str(e).strip().splitlines() or [""])[0][:200]
    return f"{type(e).__name__}: {text}" if text else type(e).__name__
