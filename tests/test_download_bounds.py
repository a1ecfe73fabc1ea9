"""Checkpoint sources are bounded (issue 16 §2): size cap, overall deadline, partial files,
local files read in place (regular files only), http(s) only, URLs redacted everywhere.

A real loopback HTTP server (http.server.ThreadingHTTPServer on 127.0.0.1) misbehaves on
request: an endless body, a byte a second, a Content-Length of terabytes, headers at a
trickle, redirects to ftp:// and file://. Every handler stops itself (a byte limit, and the
fixture's stop event), so a failing test ends instead of hanging. The redaction test runs
`bench run` on a tiny suite against a server that demands the URL's credentials, then
searches the SQLite file, the log, the manifest, a saved baseline and the rendered site
for the secrets.
"""

from __future__ import annotations

import base64
import collections
import fcntl
import http.server
import os
import socket
import textwrap
import threading
import time
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.checkpoints.download import (MANIFEST, RemoteCheckpoint, cache_name, fetch_checkpoint,
                                        manifest_entry, read_manifest)
from bench.checkpoints.foreign import load_external_checkpoint
from bench.checkpoints.sources import redact_url, redacted_config
from bench.cli.main import main
from bench.errors import CheckpointError, SuiteError
from bench.suite.load import load_suite
from test_checkpoint_download import N, Bench, one_sentence, publish
from tests.suites import published

BLOCK = 64 * 1024
SERVED_LIMIT = 64 * 1024 * 1024      # an "endless" handler stops itself after this much


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves the server's folder; `server.special[path]` names a misbehaviour and
    `server.auth` (if set) is the Authorization header every plain file needs."""

    def handle(self):
        try:
            super().handle()
        except (BrokenPipeError, ConnectionResetError):
            pass                                    # the client gave up: what we want

    def do_GET(self):
        srv = self.server
        path = self.path.split("?")[0]
        srv.hits[path] += 1
        srv.seen_auth.append(self.headers.get("Authorization"))
        kind = srv.special.get(path)
        if kind is None:
            if srv.auth and self.headers.get("Authorization") != srv.auth:
                self.send_error(401, "Unauthorized")
                return
            return super().do_GET()
        getattr(self, "_" + kind.split(":")[0])(kind.partition(":")[2])

    def _start(self, length=None):
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        if length is not None:
            self.send_header("Content-Length", str(length))
        self.end_headers()

    def _endless(self, _):                          # no Content-Length, bytes until stopped
        self._start()
        self._stream()

    def _huge(self, _):                             # announces 10 TB, then streams
        self._start(10 ** 13)
        self._stream()

    def _stream(self):
        sent = 0
        while sent < SERVED_LIMIT and not self.server.stop.is_set():
            self.wfile.write(b"\0" * BLOCK)
            sent += BLOCK
        self.server.sent[self.path] = sent

    def _trickle(self, _):                          # a byte a second, 1000 announced
        self._start(1000)
        for _ in range(20):
            if self.server.stop.wait(1.0):
                return
            self.wfile.write(b"x")
            self.wfile.flush()

    def _slow_headers(self, _):                     # the status line, then a header byte a second
        self.wfile.write(b"HTTP/1.0 200 OK\r\nX-Slow: ")
        self.wfile.flush()
        for _ in range(20):
            if self.server.stop.wait(1.0):
                return
            self.wfile.write(b"a")
            self.wfile.flush()

    def _redirect(self, target):
        self.send_response(302)
        self.send_header("Location", target)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "served"
    root.mkdir()
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                          lambda *a, **kw: _Handler(*a, directory=str(root), **kw))
    srv.daemon_threads = True
    srv.hits, srv.special, srv.sent, srv.seen_auth = collections.Counter(), {}, {}, []
    srv.root, srv.auth, srv.stop = root, None, threading.Event()
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}"
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv
    srv.stop.set()
    srv.shutdown()
    srv.server_close()


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def refused(source: RemoteCheckpoint, cache: Path, **kw) -> str:
    with pytest.raises(CheckpointError) as ei:
        fetch_checkpoint(source, cache, **kw)
    msg = str(ei.value)
    one_sentence(msg)
    return msg


# ------------------------------------------------------------------------- size cap

def test_an_endless_body_stops_at_the_cap_and_leaves_nothing(server, tmp_path):
    server.special["/endless.pt"] = "endless"
    url = f"{server.url}/endless.pt"
    msg = refused(RemoteCheckpoint(url, max_mb=2), tmp_path / "cache")
    assert msg == (f"downloading the checkpoint {url} failed: the body runs past the cap of 2.0 MB "
                   f"(raise `max_mb` in its `checkpoint:` if the file is genuine); the partial file was removed")
    assert listing(tmp_path / "cache") == []


def test_a_content_length_above_the_cap_is_refused_before_reading(server, tmp_path):
    server.special["/huge.pt"] = "huge"
    url = f"{server.url}/huge.pt"
    notes: list[str] = []
    msg = refused(RemoteCheckpoint(url), tmp_path / "cache", log=notes.append)
    assert msg.startswith(f"downloading the checkpoint {url} failed: the server announces 10000000.0 MB "
                          f"(Content-Length), more than the cap of 1000.0 MB")
    assert msg.endswith("; nothing was read")
    assert not any(n.startswith("downloading") for n in notes)
    assert listing(tmp_path / "cache") == []


# ------------------------------------------------------------------------- deadline

@pytest.mark.parametrize("kind", ["trickle", "slow_headers"])
def test_a_trickling_server_is_cut_off_at_the_overall_deadline(server, tmp_path, kind):
    # a byte a second never trips the 60 s per-read timeout; only the deadline stops it
    server.special["/slow.pt"] = kind
    url = f"{server.url}/slow.pt"
    msg = refused(RemoteCheckpoint(url, timeout_s=3), tmp_path / "cache")
    assert msg.startswith(f"downloading the checkpoint {url} failed: not complete within its "
                          f"deadline of 3 s (")
    assert "raise `timeout_s` in its `checkpoint:`" in msg
    assert listing(tmp_path / "cache") == []


# ------------------------------------------------------------------------- http(s) only

def test_a_redirect_to_ftp_is_not_followed(server, tmp_path):
    ftp = socket.socket()
    ftp.bind(("127.0.0.1", 0))
    ftp.listen(1)
    try:
        target = f"ftp://127.0.0.1:{ftp.getsockname()[1]}/weights.pt"
        server.special["/moved.pt"] = f"redirect:{target}"
        url = f"{server.url}/moved.pt"
        msg = refused(RemoteCheckpoint(url), tmp_path / "cache", timeout=3)
        assert msg == (f"downloading the checkpoint {url} failed: the server redirected it to {target}; "
                       f"only http and https are followed")
        ftp.setblocking(False)
        with pytest.raises(BlockingIOError):         # nobody connected to the "FTP server"
            ftp.accept()[0].close()
    finally:
        ftp.close()
    assert listing(tmp_path / "cache") == []


def test_a_redirect_to_a_file_url_is_refused_and_its_secret_not_shown(server, tmp_path):
    secret = tmp_path / "secret.pt"
    secret.write_bytes(b"not for the cache")
    server.special["/moved.pt"] = f"redirect:{secret.as_uri()}?token=TOK-s3cret"
    url = f"{server.url}/moved.pt"
    msg = refused(RemoteCheckpoint(url), tmp_path / "cache")
    assert msg == (f"downloading the checkpoint {url} failed: the server redirected it to "
                   f"{secret.as_uri()}?token=REDACTED; only http and https are followed")
    assert listing(tmp_path / "cache") == []


def test_a_redirect_to_http_is_followed_without_the_credentials(server, tmp_path):
    sha = publish(server, "real.pt", predicted_class=3)
    server.special["/moved.pt"] = "redirect:/real.pt"
    url = f"http://u:pw@{server.url[len('http://'):]}/moved.pt"
    path, got = fetch_checkpoint(RemoteCheckpoint(url, sha), tmp_path / "cache")
    assert got == sha and server.hits["/real.pt"] == 1
    basic = "Basic " + base64.b64encode(b"u:pw").decode()
    assert server.seen_auth == [basic, None]         # sent to the URL's host, not on the redirect


# ------------------------------------------------------------------------- local files

def test_a_file_url_naming_a_device_a_fifo_or_a_folder_is_refused_unread(tmp_path):
    fifo = tmp_path / "pipe.pt"
    os.mkfifo(fifo)
    folder = tmp_path / "folder.pt"
    folder.mkdir()
    cache = tmp_path / "cache"
    for path, kind in ((Path("/dev/zero"), "character device"), (fifo, "FIFO"), (folder, "folder")):
        msg = refused(RemoteCheckpoint(path.as_uri()), cache)
        assert msg == f"checkpoint {path} is not a regular file (it is a {kind}); only checkpoint files are read"
        with pytest.raises(CheckpointError, match="is not a regular file"):   # a `checkpoint:` path
            load_external_checkpoint(torch.nn.Linear(1, 1), path)
    assert listing(cache) == []


def test_a_local_file_larger_than_the_cap_is_refused_before_reading(tmp_path):
    big = tmp_path / "big.pt"
    with open(big, "wb") as f:
        f.truncate(3 * 10 ** 6)                      # sparse: no disk used
    msg = refused(RemoteCheckpoint(big.as_uri(), max_mb=2), tmp_path / "cache")
    assert msg == (f"checkpoint {big} is 3.0 MB, more than the cap of 2.0 MB (raise `max_mb` in its "
                   f"`checkpoint:` if it is genuine)")


def test_a_root_only_file_is_read_in_place_never_copied_into_the_cache(tmp_path):
    shadow = tmp_path / "shadow"
    shadow.write_bytes(b"root:$6$s3cret-hash:19000:0:99999:7:::\n")
    shadow.chmod(0o600)
    cache = tmp_path / "cache"
    try:
        path, _ = fetch_checkpoint(RemoteCheckpoint(shadow.as_uri()), cache)
        assert path == shadow                        # in place (or refused, unreadable)
        with pytest.raises(CheckpointError, match="is not a loadable PyTorch checkpoint"):
            load_external_checkpoint(torch.nn.Linear(1, 1), path)
    except CheckpointError as e:
        assert "cannot be read" in str(e)
    assert listing(cache) == []


def test_a_file_url_is_verified_in_place_and_a_change_after_it_is_caught(tmp_path):
    model = torch.nn.Linear(2, 2)
    src = tmp_path / "w.pt"
    torch.save(model.state_dict(), src)
    path, sha = fetch_checkpoint(RemoteCheckpoint(src.as_uri()), tmp_path / "cache")
    msg = refused(RemoteCheckpoint(src.as_uri(), "0" * 64), tmp_path / "cache")
    assert msg == f"the checkpoint file {src} has sha256 {sha}, but the sha256 the suite declares is {'0' * 64}; refused"
    torch.save(torch.nn.Linear(2, 2).state_dict(), src)       # swapped between check and load
    with pytest.raises(CheckpointError, match="changed after its sha256 was verified"):
        load_external_checkpoint(model, path, sha256=sha)


# ------------------------------------------------------------------------- partial files

def test_stale_partial_files_of_killed_runs_are_removed_at_the_next_download(server, tmp_path):
    sha = publish(server, "m.pt", predicted_class=1)
    cache = tmp_path / "cache"
    cache.mkdir()
    hour_ago = time.time() - 3600

    def make(name: str, old: bool = True) -> Path:
        p = cache / name
        p.write_bytes(b"half")
        if old:
            os.utime(p, (hour_ago, hour_ago))
        return p
    stale = [make(".aaaa-m.pt.tmp-4242-deadbeef"), make("bbbb-m.pt.part4242")]
    fresh = make(".cccc-m.pt.tmp-4343-feedface", old=False)       # a download still writing
    locked = make(".dddd-m.pt.tmp-4444-cafecafe")                   # untouched, but its writer lives
    listed = make("eeee-m.part7")                                    # a real cached file of that name
    (cache / MANIFEST).write_text('{"version": 2, "files": {"eeee-m.part7": {"file": "eeee-m.part7"}}}')
    holder = os.open(locked, os.O_RDONLY)
    try:
        fcntl.flock(holder, fcntl.LOCK_EX)
        notes: list[str] = []
        fetch_checkpoint(RemoteCheckpoint(f"{server.url}/m.pt", sha), cache, log=notes.append)
    finally:
        os.close(holder)
    assert not any(p.exists() for p in stale)
    assert fresh.exists() and locked.exists() and listed.exists()
    assert sum("a partial download left by a killed run" in n for n in notes) == 2


def test_a_mismatch_or_a_cap_keeps_no_partial_file(server, tmp_path):
    publish(server, "m.pt", predicted_class=1)
    cache = tmp_path / "cache"
    url = f"{server.url}/m.pt"
    assert "has sha256" in refused(RemoteCheckpoint(url, "0" * 64), cache)
    assert "more than the cap of 10000 bytes" in refused(RemoteCheckpoint(url, max_mb=0.01), cache)
    assert listing(cache) == []


# ------------------------------------------------------------------------- the suite's bounds

def _suite(tmp_path, extra: str) -> Path:
    p = tmp_path / "s.yaml"
    p.write_text("version: 1\nmodels:\n  m:\n    dataset: mnist\n    arch: small_cnn\n"
                 "    checkpoint:\n      url: https://e.org/a.pt\n" + textwrap.indent(extra, "      "))
    return p


def test_max_mb_and_timeout_s_are_read_and_leave_the_model_key_alone(tmp_path):
    plain = load_suite(_suite(tmp_path, "")).models["m"]
    bounded = load_suite(_suite(tmp_path, "max_mb: 2500\ntimeout_s: 90.5\n")).models["m"]
    assert (plain.checkpoint.max_mb, plain.checkpoint.timeout_s) == (1000.0, 1800.0)
    assert (bounded.checkpoint.max_mb, bounded.checkpoint.timeout_s) == (2500.0, 90.5)
    assert bounded.checkpoint.max_bytes == 2_500_000_000
    assert bounded.key == plain.key                  # bounds do not change the weights


@pytest.mark.parametrize("key, value", [("max_mb", "0"), ("max_mb", "-1"), ("max_mb", ".nan"),
                                         ("max_mb", ".inf"), ("max_mb", "true"), ("timeout_s", "'30'"),
                                         ("timeout_s", "0"), ("timeout_s", "[1]")])
def test_bad_bounds_are_located_errors(tmp_path, key, value):
    with pytest.raises(SuiteError) as ei:
        load_suite(_suite(tmp_path, f"{key}: {value}\n"))
    e = ei.value
    assert (e.line, e.key) == (8, f"models.m.checkpoint.{key}")
    unit = "megabytes" if key == "max_mb" else "seconds"
    assert e.message.startswith(f"must be a finite number of {unit} greater than 0, got ")


# ------------------------------------------------------------------------- redaction

@pytest.mark.parametrize("url, shown", [
    ("https://e.org/a.pt", "https://e.org/a.pt"),
    ("https://alice:pw@e.org:8443/a.pt", "https://e.org:8443/a.pt"),
    ("https://token@e.org/a.pt", "https://e.org/a.pt"),
    ("https://b.s3.amazonaws.com/a.pt?X-Amz-Credential=AKIA%2F1&X-Amz-Signature=abc123&x=1",
     "https://b.s3.amazonaws.com/a.pt?X-Amz-Credential=REDACTED&X-Amz-Signature=REDACTED&x=REDACTED"),
    ("https://e.org/a.pt?s3cretvalue", "https://e.org/a.pt?REDACTED"),
    ("https://e.org/a.pt#access_token=zz", "https://e.org/a.pt#REDACTED"),
    ("http://[::1]:80/a.pt?sig=1", "http://[::1]:80/a.pt?sig=REDACTED"),
    ("file://u:p@localhost/x/a.pt", "file://localhost/x/a.pt"),
])
def test_redact_url(url, shown):
    assert redact_url(url) == shown
    assert redact_url(shown) == shown                # idempotent: what is stored is shown as is


_SECRET = st.text("ABCDEFGHJKLMNPQRSTUVWXYZ0123456789-_.~", min_size=3, max_size=12).map(lambda t: "Q" + t)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(user=_SECRET, password=st.one_of(st.just(""), _SECRET), values=st.lists(_SECRET, max_size=4),
       names=st.lists(st.sampled_from(["sig", "X-Amz-Signature", "token", "key", "id", "a"]), max_size=4),
       fragment=st.one_of(st.just(""), _SECRET))
def test_redact_url_keeps_no_secret(user, password, values, names, fragment):
    userinfo = f"{user}:{password}@" if password else f"{user}@"
    query = "&".join(f"{n}={v}" for n, v in zip(names, values)) or "&".join(values)
    url = f"https://{userinfo}e.org/dir/w.pt" + (f"?{query}" if query else "") + (f"#{fragment}" if fragment else "")
    shown = redact_url(url)
    assert shown.startswith("https://e.org/dir/w.pt") and redact_url(shown) == shown
    for secret in [user, password, *values, fragment]:
        assert not secret or secret not in shown


def test_redacted_config_changes_urls_only():
    cfg = {"model": {"checkpoint": {"url": "https://u:p@e.org/a.pt?k=v", "sha256": None}},
           "seed": 0, "list": [{"url": "http://e.org/?t=1"}]}
    assert redacted_config(cfg) == {"model": {"checkpoint": {"url": "https://e.org/a.pt?k=REDACTED",
                                                             "sha256": None}},
                                    "seed": 0, "list": [{"url": "http://e.org/?t=REDACTED"}]}


SECRETS = ("user-s3cret-0", "PW-s3cret-1", "SIG-s3cret-2", "TOK-s3cret-3")


def test_credentials_in_a_url_reach_no_database_log_baseline_or_site(server, tmp_path, data_root, capsys):
    user, password, sig, tok = SECRETS
    server.auth = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    sha = publish(server, "smallcnn.pt", predicted_class=3)
    host = server.url[len("http://"):]
    url = f"http://{user}:{password}@{host}/smallcnn.pt?X-Amz-Signature={sig}&token={tok}"
    shown = f"{server.url}/smallcnn.pt?X-Amz-Signature=REDACTED&token=REDACTED"
    gone = f"http://{user}:{password}@{host}/gone.pt?sig={sig}"        # a failing model: its error too
    b = Bench(tmp_path, data_root, capsys)
    text = published(url, None, N).replace(
        "models:\n", f"models:\n  m_gone:\n    dataset: mnist\n    arch: small_cnn\n"
                     f"    checkpoint: {{url: \"{gone}\"}}\n", 1).replace("models: [m_pub]", "models: [m_gone, m_pub]")
    b.write(text)
    logs = []
    rc, err = b.run("--dry-run")
    logs += [b.stdout, err]
    assert f"{shown} (to download)" in b.stdout
    rc, err = b.run()
    logs += [b.stdout, err]
    assert rc == 1, err                              # m_gone failed, m_pub was evaluated
    assert f"recorded sha256 {sha} of {shown}" in err
    assert f"downloading the checkpoint {server.url}/gone.pt?sig=REDACTED failed: HTTP 404" in err
    rec = b.model_record()
    assert rec.checkpoint_sha256 == sha and rec.config["checkpoint"]["url"] == shown
    assert manifest_entry(b.downloads, url)["url"] == shown
    assert cache_name(url) in read_manifest(b.downloads)

    capsys.readouterr()
    assert main(["baseline", "save", "b1", "--db", str(b.db), "--dir", str(tmp_path / "baselines")]) == 0
    site = tmp_path / "site"
    assert main(["report", "--out", str(site), "--db", str(b.db), "--baseline",
                 str(tmp_path / "baselines" / "b1.json"), "--export", "csv,json,md,tex"]) == 0
    captured = capsys.readouterr()
    logs += [captured.out, captured.err]

    files = [p for p in tmp_path.rglob("*") if p.is_file() and "served" not in p.parts and p != b.suite]
    assert any(p.name == "b1.json" for p in files) and any(p.suffix == ".html" for p in files)
    assert any(p.name.startswith("r.sqlite") for p in files)
    # the URL is there, redacted: the search below looks where it would be
    assert shown in (tmp_path / "baselines" / "b1.json").read_text()
    assert any(shown.replace("&", "&amp;") in p.read_text() for p in files if p.suffix == ".html")
    for secret in SECRETS:
        for p in files:
            assert secret.encode() not in p.read_bytes(), f"{secret} in {p}"
        for log in logs:
            assert secret not in log
