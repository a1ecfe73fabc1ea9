"""Released checkpoints by URL: a real HTTP server on loopback, `bench run` on a tiny suite.

The server (http.server.ThreadingHTTPServer on 127.0.0.1, port 0, in a thread) serves a
temporary folder and counts requests per path, so "downloaded once" and "not downloaded"
are observed, not assumed. The checkpoints are SmallCNN state dicts whose last layer is
zero but for one bias: every image is predicted as that class, so the recorded outcomes
prove which file was loaded (a fresh SmallCNN predicts class 0).
"""

from __future__ import annotations

import collections
import http.server
import os
import shutil
import socket
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from sqlalchemy import select
from sqlalchemy.orm import Session

from bench.db import database as db
from bench.db.outcomes import unpack_outcomes
from bench.db.schema import ModelRecord, ResultRecord
from bench.checkpoints.cache import sha256_file
from bench.cli.main import main
from bench.data.read import load_split
from bench.checkpoints.download import MANIFEST, RemoteCheckpoint, cache_name, fetch_checkpoint, manifest_entry
from bench.errors import CheckpointError, SuiteError
from bench.plugins.model import build_model
from bench.plugins.registry import DATASETS
from bench.suite.load import load_suite
from tests.suites import published

N = 64


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves the server's folder; `server.special` maps a path to a misbehaviour."""

    def do_GET(self):
        self.server.hits[self.path] += 1
        special = self.server.special.get(self.path)
        if special == "truncated":
            body = b"x" * 1000
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(body) + 500))
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()
            self.close_connection = True
            return
        if special == "html":
            body = b"<!DOCTYPE html><html><body>Google Drive can't scan this file</body></html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        if special == "500":
            self.send_error(500, "Internal Server Error")
            return
        super().do_GET()

    def log_message(self, *args):  # keep the test output clean
        pass


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "served"
    root.mkdir()

    def handler(*a, **kw):
        return _Handler(*a, directory=str(root), **kw)

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    srv.hits = collections.Counter()
    srv.special = {}
    srv.root = root
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}"
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def publish(server, name: str, predicted_class: int) -> str:
    """Save a SmallCNN state dict that predicts `predicted_class` everywhere; return its sha256.
    The same class gives the same bytes (seeded), another class another file."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = build_model("small_cnn", {}, DATASETS.get("mnist").info)
    with torch.no_grad():
        model.classifier[-1].bias.zero_()
        model.classifier[-1].bias[predicted_class] = 1.0
    path = server.root / name
    torch.save(model.state_dict(), path)
    return sha256_file(path)


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Bench:
    """`bench run` on a suite file, with one database and one results folder."""

    def __init__(self, tmp_path, data_root, capsys):
        self.tmp, self.data_root, self.capsys = tmp_path, data_root, capsys
        self.suite = tmp_path / "suite.yaml"
        self.db = tmp_path / "r.sqlite"
        self.results = tmp_path / "res"
        self.downloads = self.results / "checkpoints" / "downloads"

    def write(self, text: str) -> None:
        self.suite.write_text(text)

    def run(self, *extra: str) -> tuple[int, str]:
        self.capsys.readouterr()
        rc = main(["run", str(self.suite), "--tag", "pub", "--db", str(self.db), "--data-root",
                   str(self.data_root), "--results-dir", str(self.results), "--no-progress", *extra])
        captured = self.capsys.readouterr()
        self.stdout = captured.out
        return rc, captured.err

    def result(self):
        with Session(db.open_db(self.db)) as s:
            return s.scalars(select(ResultRecord)).one()

    def model_record(self):
        with Session(db.open_db(self.db)) as s:
            return s.scalars(select(ModelRecord)).one_or_none()

    def cached_files(self) -> list[str]:
        return sorted(p.name for p in self.downloads.glob("*") if p.name != MANIFEST) \
            if self.downloads.exists() else []


@pytest.fixture
def bench_(tmp_path, data_root, capsys):
    return Bench(tmp_path, data_root, capsys)


def predicted(result) -> np.ndarray:
    return unpack_outcomes(result.outcomes, result.n)


def labels(data_root) -> np.ndarray:
    return load_split("mnist", "test", data_root, offline=True)[1][:N]


def one_sentence(text: str) -> None:
    assert "\n" not in text.strip() and "Traceback" not in text


# ------------------------------------------------------------------------- through bench run

def test_downloaded_verified_loaded_evaluated_recorded_then_cached(server, bench_, data_root):
    sha = publish(server, "smallcnn.pt", predicted_class=3)
    url = f"{server.url}/smallcnn.pt"
    bench_.write(published(url, sha, N))
    assert bench_.run("--dry-run")[0] == 0 and server.hits["/smallcnn.pt"] == 0
    assert f"m_pub                        {url} (to download)" in bench_.stdout
    rc, err = bench_.run()
    assert rc == 0, err
    assert server.hits["/smallcnn.pt"] == 1
    assert "loaded 1 model(s)" in bench_.stdout
    # the file in the cache, under its URL-derived name, byte-identical, with no temporary left
    assert bench_.cached_files() == [cache_name(url)]
    assert sha256_file(bench_.downloads / cache_name(url)) == sha
    assert manifest_entry(bench_.downloads, url)["sha256"] == sha
    # loaded (every image predicted as class 3) and evaluated
    r = bench_.result()
    assert r.status == "done" and r.n == N
    assert np.array_equal(predicted(r), labels(data_root) == 3)
    # recorded: defense "external", the URL and hash in the stored config, the file's sha256
    m = bench_.model_record()
    assert m.defense == "external" and m.config["defense"] == "external"
    assert m.config["checkpoint"] == {"url": url, "sha256": sha}
    assert m.checkpoint_sha256 == sha and Path(m.checkpoint_path) == (bench_.downloads / cache_name(url)).resolve()
    # a second run (forced, so the model is needed again) does not touch the server
    bench_.run("--dry-run", "--force")
    assert f"{url} (cached)" in bench_.stdout
    rc, err = bench_.run("--force")
    assert rc == 0, err
    assert server.hits["/smallcnn.pt"] == 1
    assert np.array_equal(predicted(bench_.result()), labels(data_root) == 3)


def test_wrong_sha256_is_refused_and_nothing_is_evaluated(server, bench_):
    sha = publish(server, "smallcnn.pt", predicted_class=3)
    wrong = "0" * 64
    url = f"{server.url}/smallcnn.pt"
    bench_.write(published(url, wrong, N))
    rc, err = bench_.run()
    assert rc == 1
    sentence = (f"the checkpoint downloaded from {url} has sha256 {sha}, but the sha256 the suite "
                f"declares is {wrong}; refused (the file was not kept)")
    assert sentence in err and "Traceback" not in err
    r = bench_.result()
    assert r.status == "failed" and r.outcomes is None and r.n_correct == 0
    assert r.error == f"loading the checkpoint failed: {sentence}"
    assert bench_.model_record() is None
    assert bench_.cached_files() == []     # neither the bad file nor a temporary stays


def test_first_hash_is_recorded_and_a_changed_file_is_refused(server, bench_, data_root):
    first = publish(server, "smallcnn.pt", predicted_class=3)
    url = f"{server.url}/smallcnn.pt"
    bench_.write(published(url, None, N))           # no sha256: trust on first use
    rc, err = bench_.run()
    assert rc == 0, err
    assert f"recorded sha256 {first} of {url}" in err
    # recorded in both places that outlive the run
    assert manifest_entry(bench_.downloads, url)["sha256"] == first
    m = bench_.model_record()
    assert m.checkpoint_sha256 == first and m.config["checkpoint"] == {"url": url, "sha256": None}

    # the server now serves another file; the cache is cleared: the database still knows
    changed = publish(server, "smallcnn.pt", predicted_class=5)
    assert changed != first
    shutil.rmtree(bench_.downloads)
    rc, err = bench_.run("--force")
    assert rc == 1 and server.hits["/smallcnn.pt"] == 2
    sentence = (f"the checkpoint downloaded from {url} has sha256 {changed}, but the sha256 recorded "
                f"at its first download (results database) is {first}; refused")
    assert sentence in err
    r = bench_.result()
    assert r.status == "failed" and sentence in r.error
    assert bench_.cached_files() == []

    # a fresh database with the cache's manifest intact (only the file gone): the manifest knows
    publish(server, "smallcnn.pt", predicted_class=3)
    assert bench_.run("--force")[0] == 0    # re-downloads the first file (it matches)
    (bench_.downloads / cache_name(url)).unlink()
    publish(server, "smallcnn.pt", predicted_class=5)
    bench_.db = bench_.tmp / "fresh.sqlite"
    rc, err = bench_.run()
    assert rc == 1
    assert f"has sha256 {changed}, but the sha256 recorded at its first download ({MANIFEST}," in err


def test_corrupt_cached_file_is_downloaded_again(server, bench_, data_root):
    sha = publish(server, "smallcnn.pt", predicted_class=3)
    url = f"{server.url}/smallcnn.pt"
    bench_.write(published(url, None, N))            # the recorded hash guards the cache too
    assert bench_.run()[0] == 0
    cached = bench_.downloads / cache_name(url)
    data = bytearray(cached.read_bytes())
    data[len(data) // 2] ^= 0xFF
    cached.write_bytes(bytes(data))
    # offline, the damaged copy is refused, not used
    rc, err = bench_.run("--force", "--offline")
    assert rc == 1 and "no longer matches" in err and "--offline forbids downloading it again" in err
    assert server.hits["/smallcnn.pt"] == 1
    # online, it is downloaded again, verified and used
    rc, err = bench_.run("--force")
    assert rc == 0, err
    assert f"warning: the cached checkpoint {cached} of {url} no longer matches" in err
    assert server.hits["/smallcnn.pt"] == 2 and sha256_file(cached) == sha
    assert np.array_equal(predicted(bench_.result()), labels(data_root) == 3)


def test_http_404_is_one_sentence_and_the_run_goes_on(server, bench_):
    url = f"{server.url}/missing.pt"
    bench_.write(published(url, None, N))
    rc, err = bench_.run()
    assert rc == 1
    sentence = f"downloading the checkpoint {url} failed: HTTP 404 File not found"
    assert f"model m_pub failed: {sentence}\n" in err and "Traceback" not in err
    assert "loaded 0 model(s)" in bench_.stdout
    r = bench_.result()
    assert r.status == "failed" and r.error == f"loading the checkpoint failed: {sentence}"
    one_sentence(r.error)


def test_connection_refused_is_one_sentence(bench_):
    url = f"http://127.0.0.1:{free_port()}/smallcnn.pt"
    bench_.write(published(url, None, N))
    rc, err = bench_.run()
    assert rc == 1
    r = bench_.result()
    assert r.status == "failed"
    assert r.error.startswith(f"loading the checkpoint failed: downloading the checkpoint {url} failed: ")
    assert "refused" in r.error.lower()
    one_sentence(r.error)


def test_offline_with_nothing_cached_is_one_sentence(server, bench_):
    publish(server, "smallcnn.pt", predicted_class=3)
    url = f"{server.url}/smallcnn.pt"
    bench_.write(published(url, None, N))
    rc, err = bench_.run("--offline")
    assert rc == 1 and server.hits["/smallcnn.pt"] == 0
    sentence = (f"the checkpoint {url} is not in the checkpoint cache {bench_.downloads} "
                f"and --offline forbids downloading it")
    assert sentence in err
    assert bench_.result().error == f"loading the checkpoint failed: {sentence}"


def test_one_failing_download_does_not_stop_the_other_models(server, bench_, data_root):
    sha = publish(server, "good.pt", predicted_class=3)
    extra = (f"  m_bad:\n    dataset: mnist\n    arch: small_cnn\n"
             f"    checkpoint: {{url: \"{server.url}/gone.pt\"}}\n")
    text = published(f"{server.url}/good.pt", sha, N).replace("models:\n", "models:\n" + extra, 1) \
        .replace("models: [m_pub]", "models: [m_bad, m_pub]")
    bench_.write(text)
    rc, err = bench_.run()
    assert rc == 1
    with Session(db.open_db(bench_.db)) as s:
        got = {r.model_name: r for r in s.scalars(select(ResultRecord))}
    assert got["m_bad"].status == "failed" and "HTTP 404" in got["m_bad"].error
    assert got["m_pub"].status == "done"
    assert np.array_equal(predicted(got["m_pub"]), labels(data_root) == 3)


# ------------------------------------------------------------------------- the download module

def test_truncated_body_500_and_html_page_are_refused(server, tmp_path):
    cache = tmp_path / "cache"
    for path, why in (("/cut.pt", "the body ended after 1000 of the 1500 bytes its Content-Length announced"),
                      ("/boom.pt", "HTTP 500 Internal Server Error"),
                      ("/drive.pt", "the server sent an HTML page (Content-Type text/html)")):
        server.special[path] = {"/cut.pt": "truncated", "/boom.pt": "500", "/drive.pt": "html"}[path]
        url = server.url + path
        with pytest.raises(CheckpointError) as ei:
            fetch_checkpoint(RemoteCheckpoint(url), cache)
        msg = str(ei.value)
        assert msg.startswith(f"downloading the checkpoint {url} failed: {why}")
        one_sentence(msg)
        assert server.hits[path] == 1
    # nothing half-written stays in the cache, nothing was recorded
    assert [p.name for p in cache.glob("*")] == []


def test_file_urls_are_read_in_place_and_the_progress_line(server, tmp_path, capsys):
    src = tmp_path / "weights.pt"
    src.write_bytes(b"\x00" * 3_000_000)
    notes: list[str] = []
    cache = tmp_path / "cache"
    path, sha = fetch_checkpoint(RemoteCheckpoint(src.as_uri(), sha256_file(src)), cache, log=notes.append)
    assert path == src and sha == sha256_file(src) and not cache.exists()   # no copy in the cache
    with pytest.raises(CheckpointError, match=f"checkpoint {tmp_path / 'nope.pt'} does not exist"):
        fetch_checkpoint(RemoteCheckpoint((tmp_path / "nope.pt").as_uri()), cache)
    # an http download says what it fetches, and shows its progress
    shutil.copy(src, server.root / "weights.pt")
    url = f"{server.url}/weights.pt"
    fetch_checkpoint(RemoteCheckpoint(url), cache, log=notes.append, progress=True)
    assert any(n.startswith(f"downloading {url} (3.0 MB)") for n in notes)
    assert "weights.pt: 3.0 MB of 3.0 MB" in capsys.readouterr().err


def test_a_download_never_leaves_a_half_file_in_place(server, tmp_path, monkeypatch):
    # midway through the body (seen from the progress line) the final name must not exist;
    # an interruption there leaves nothing behind
    publish(server, "smallcnn.pt", predicted_class=3)
    url = f"{server.url}/smallcnn.pt"
    cache = tmp_path / "cache"
    final = cache / cache_name(url)
    import sys

    import bench.checkpoints.download as dl
    monkeypatch.setattr(dl, "CHUNK", 4096)
    seen = []

    class Interrupting:
        def write(self, text):
            if "smallcnn.pt:" in text and not seen:
                seen.append(sorted(p.name for p in cache.glob("*")))
                raise KeyboardInterrupt
            return len(text)

        def flush(self):
            pass

    monkeypatch.setattr(sys, "stderr", Interrupting())
    with pytest.raises(KeyboardInterrupt):
        fetch_checkpoint(RemoteCheckpoint(url), cache, progress=True)
    (only,), = seen                                           # only the temporary, mid-body
    assert only != final.name and only.startswith(f".{final.name}.tmp-{os.getpid()}-")
    assert list(cache.glob("*")) == []


# ------------------------------------------------------------------------- the suite file

def test_resolved_model_key_includes_url_and_sha256(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text(published("https://example.org/a.pt", "AB" * 32, N))
    spec = load_suite(p).models["m_pub"]
    assert spec.defense == "external" and spec.defense_config is None
    assert spec.checkpoint == RemoteCheckpoint("https://example.org/a.pt", "ab" * 32)
    assert spec.resolved()["checkpoint"] == {"url": "https://example.org/a.pt", "sha256": "ab" * 32}
    keys = {spec.key}
    for text in (published("https://example.org/b.pt", "ab" * 32, N),
                 published("https://example.org/a.pt", "cd" * 32, N),
                 published("https://example.org/a.pt", None, N)):
        p.write_text(text)
        keys.add(load_suite(p).models["m_pub"].key)
    assert len(keys) == 4


def _located_error(tmp_path, model_body: str) -> SuiteError:
    text = ("version: 1\nattacks:\n  clean: {plugin: clean}\nmodels:\n  m_pub:\n"
            "    dataset: mnist\n    arch: small_cnn\n" + textwrap.indent(model_body, "    "))
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(SuiteError) as ei:
        load_suite(p)
    return ei.value


@pytest.mark.parametrize("body, line, key, message", [
    ("checkpoint:\n  url: https://e.org/a.pt\n  sha256: abc123\n", 10, "models.m_pub.checkpoint.sha256",
     "must be 64 hexadecimal characters, got 'abc123' (6 characters)"),
    ("checkpoint:\n  url: https://e.org/a.pt\n  sha256: \"" + "g" * 64 + "\"\n", 10,
     "models.m_pub.checkpoint.sha256", "must be 64 hexadecimal characters"),
    ("checkpoint:\n  url: https://e.org/a.pt\n  sha265: x\n", 10, "models.m_pub.checkpoint.sha265",
     "unknown key (did you mean 'sha256'?)"),
    ("checkpoint:\n  url: ftp://e.org/a.pt\n", 9, "models.m_pub.checkpoint.url",
     "only http, https, file URLs are supported, got 'ftp'"),
    ("checkpoint:\n  url: https://e.org/models/\n", 9, "models.m_pub.checkpoint.url", "names a folder"),
    ("checkpoint:\n  sha256: \"" + "a" * 64 + "\"\n", 8, "models.m_pub.checkpoint", "needs a 'url'"),
    ("checkpoint: [a, b]\n", 8, "models.m_pub.checkpoint", "must be a path or a mapping"),
    ("seed: 1\n", 6, "models.m_pub", "needs a 'defense' (or a 'checkpoint' to evaluate released weights)"),
    ("defense: external\n", 8, "models.m_pub.defense", "it needs a 'checkpoint'"),
    ("checkpoint: {url: 'https://e.org/a.pt'}\ndefense_config: {eps: 0.3}\n", 9,
     "models.m_pub.defense_config", "a released checkpoint has no defense to configure"),
])
def test_spec_errors_are_located(tmp_path, body, line, key, message):
    e = _located_error(tmp_path, body)
    assert (e.line, e.key) == (line, key), str(e)
    assert message in e.message
    assert str(e).startswith(f"{tmp_path / 'bad.yaml'}:{line}: {key}: ")


def test_a_declared_defense_is_kept_and_base_replaces_the_checkpoint_whole(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text(textwrap.dedent(f"""\
        version: 1
        models:
          a:
            dataset: mnist
            arch: small_cnn
            defense: trades
            checkpoint: {{url: "https://e.org/a.pt", sha256: "{'a' * 64}"}}
          b:
            base: a
            checkpoint: {{url: "https://e.org/b.pt"}}
        """))
    s = load_suite(p)
    assert s.models["a"].defense == "trades"
    # b's file is another one: a's pinned hash must not carry over to it
    assert s.models["b"].checkpoint == RemoteCheckpoint("https://e.org/b.pt", None)
