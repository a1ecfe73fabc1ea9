"""The rendered site in a real browser: headless Chromium opens the pages from disk.

Needs /usr/bin/chromium (Debian package `chromium`). Without it the test is skipped,
unless BENCH_INSTALL_BROWSER=1, in which case it runs `apt-get install -y chromium` first.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import pytest

from bench.leaderboard.fmt import table_page
from bench.leaderboard.site import render_site
from test_report import make_db

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run",
         "--disable-dev-shm-usage", "--hide-scrollbars", "--enable-logging=stderr", "--v=0"]


def chromium() -> str:
    if CHROMIUM.exists():
        return str(CHROMIUM)
    if os.environ.get("BENCH_INSTALL_BROWSER") != "1":
        pytest.skip("headless Chromium is not installed (/usr/bin/chromium, Debian package "
                    "`chromium`); install it or set BENCH_INSTALL_BROWSER=1 to let this test "
                    "run `apt-get install -y chromium`")
    if shutil.which("apt-get") is None:
        pytest.skip("BENCH_INSTALL_BROWSER=1 but apt-get is not available")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    cmd = ["apt-get", "install", "-y", "-q", "chromium"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:      # stale package lists: update once and retry
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, timeout=600)
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    if not CHROMIUM.exists():
        pytest.skip(f"`apt-get install -y chromium` failed: {proc.stderr.strip()[-300:]}")
    return str(CHROMIUM)


def run_chromium(browser: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([browser, *FLAGS, f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=120)


def console_errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines()
            if "Uncaught" in line or (":CONSOLE" in line and "rror" in line)]


def png_rgb(path: Path) -> tuple[int, int, list[bytes]]:
    """Decode an 8-bit RGB/RGBA non-interlaced PNG (Chromium's screenshots) into rows."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width = 8, b"", 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, ctype, _, _, interlace = struct.unpack(">IIBBBBB", chunk)
            assert depth == 8 and ctype in (2, 6) and interlace == 0
            bpp = 3 if ctype == 2 else 4
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + length
    raw, stride, rows, prev = zlib.decompress(idat), width * bpp, [], bytearray(width * bpp)
    for y in range(height):
        f, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], prev[i - bpp] if i >= bpp else 0
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(bytes(line[j] for j in range(stride) if bpp == 3 or j % 4 != 3))
        prev = line
    return width, height, rows


def count_color(rows: list[bytes], rgb: tuple[int, int, int], tol: int = 12) -> int:
    n = 0
    for row in rows:
        for i in range(0, len(row), 3):
            if all(abs(row[i + k] - rgb[k]) <= tol for k in range(3)):
                n += 1
    return n


@pytest.fixture(scope="module")
def browser_site(tmp_path_factory):
    browser = chromium()
    tmp = tmp_path_factory.mktemp("browser")
    engine = make_db(tmp)
    render_site(engine, tmp / "site")
    return browser, tmp, tmp / "site"


def test_table_page_in_chromium(browser_site):
    browser, tmp, site = browser_site
    url = (site / table_page("table1")).as_uri() + "#sort=-2"     # sort by PGD-40, descending
    proc = run_chromium(browser, tmp / "profile", "--dump-dom", url)
    dom = proc.stdout
    assert proc.returncode == 0, proc.stderr[-2000:]
    for value in ("99.00", "80.00", "90.00", "60.00", "70.00", "85.00", "55.00", "not run",
                  "failed"):
        assert value in dom, value
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in dom and "<script>alert" not in dom
    # the inline script ran: the sorter titled the headers and applied #sort=-2
    assert re.search(r'<table class="grid sortable paper" id="paper-table" data-sorter="ready">',
                     dom)
    assert 'title="click to sort">Defense</th>' in dom
    assert re.search(r'<th data-col="1"[^>]*aria-sort="descending"', dom)
    order = re.findall(r'<tr id="row-(\d)">', dom)
    assert order == ["0", "2", "1"]                               # 80.00, 70.00, 60.00
    # no JavaScript errors, neither caught in the page nor on the console
    assert re.search(r'<pre id="js-errors" hidden="">\s*</pre>', dom)
    assert console_errors(proc.stderr) == []


def test_error_detection_works(browser_site):
    """The page-level error trap and the console scan do see a broken script."""
    browser, tmp, site = browser_site
    page = site / "broken.html"
    html = (site / table_page("table1")).read_text()
    page.write_text(html.replace("</body>", "<script>noSuchFunction();</script></body>"))
    proc = run_chromium(browser, tmp / "profile-broken", "--dump-dom", page.as_uri())
    page.unlink()
    m = re.search(r'<pre id="js-errors">(.*?)</pre>', proc.stdout, re.S)
    assert m and "noSuchFunction" in m.group(1)


def test_model_page_plots_render(browser_site):
    browser, tmp, site = browser_site
    page = site / "model-ka.html"
    proc = run_chromium(browser, tmp / "profile-model", "--dump-dom", page.as_uri())
    dom = proc.stdout
    assert proc.returncode == 0, proc.stderr[-2000:]
    # one curve per attack with an ε sweep; the clean attack (one point) draws none
    assert dom.count("<svg") >= 4 and dom.count("<polyline") >= 7
    assert "(none)" not in dom
    assert re.search(r'<pre id="js-errors" hidden="">\s*</pre>', dom)
    assert console_errors(proc.stderr) == []
    shot = tmp / "model.png"
    proc = run_chromium(browser, tmp / "profile-model", f"--screenshot={shot}",
                        "--window-size=1280,900", page.as_uri())
    assert shot.exists(), proc.stderr[-2000:]
    width, height, rows = png_rgb(shot)
    assert (width, height) == (1280, 900)
    # the training curves are drawn: pixels in the first series' colour (#1f77b4) and the
    # second's (#d62728) are on screen, not only present in the DOM
    assert count_color(rows, (0x1F, 0x77, 0xB4)) > 40
    assert count_color(rows, (0xD6, 0x27, 0x28)) > 40


def test_table_screenshot(browser_site):
    browser, tmp, site = browser_site
    shot = tmp / "table.png"
    proc = run_chromium(browser, tmp / "profile-shot", f"--screenshot={shot}",
                        "--window-size=1280,900", (site / table_page("table1")).as_uri())
    assert shot.exists() and shot.stat().st_size > 10_000, proc.stderr[-2000:]
    width, height, rows = png_rgb(shot)
    assert (width, height) == (1280, 900)
    assert count_color(rows, (0xB3, 0x26, 0x1E), tol=20) > 20     # the red "failed" label
    if os.environ.get("BENCH_SCREENSHOT_DIR"):                      # keep it for a human
        shutil.copy(shot, Path(os.environ["BENCH_SCREENSHOT_DIR"]) / "table.png")


def test_the_papers_orientation_is_one_click_away(tmp_path):
    """A transposed table (Table 3) opens one row per model; #paper (what the button does)
    shows the paper's orientation — attacks as rows — and hides the other."""
    from sqlalchemy.orm import Session

    from bench.db import database as db
    from bench.run.runner import Runner
    from bench.suite.load import load_suite
    from test_report import add_result, correct_range
    from test_table_layout import SUITE
    browser = chromium()
    (tmp_path / "suite.yaml").write_text(SUITE)
    engine = db.open_db(tmp_path / "bench.sqlite")
    Runner(load_suite(tmp_path / "suite.yaml"), engine, data_root=tmp_path, device="cpu").record_tables()
    with Session(engine) as s:
        add_result(s, model="m_a", model_key="ka", attack="pgd", eps_literal="0.3", eps=0.3,
                   correct=correct_range(100, 0, 60))
        s.commit()
    page = render_site(engine, tmp_path / "site").parent / table_page("tab")
    rows_first = run_chromium(browser, tmp_path / "p1", "--dump-dom", page.as_uri()).stdout
    paper = run_chromium(browser, tmp_path / "p2", "--dump-dom", page.as_uri() + "#paper").stdout
    assert re.search(r'<div class="scroll" id="paper-view" hidden="">', rows_first)
    assert re.search(r'<div class="scroll" id="rows-view">', rows_first)
    assert re.search(r'<div class="scroll" id="paper-view">', paper)
    assert re.search(r'<div class="scroll" id="rows-view" hidden="">', paper)
    m = re.search(r'<table class="grid paper-orientation".*?</table>', paper, re.S)
    heads = re.findall(r"<th[^>]*>([^<]+)<", m.group(0))
    assert heads[:5] == ["Attack ↓ / Defense →", "Borrowed [7]", "Alpha", "Beta", "Gamma"]
    assert "60.00" in m.group(0)
    assert re.search(r'<pre id="js-errors" hidden="">\s*</pre>', paper)


def test_index_page_smoke_grid_in_chromium(tmp_path):
    """The index page of a smoke-only database: the smoke grid is on screen, with its
    values, labels and SMOKE marks, above the (empty) paper tables; the sorter works."""
    from test_report import make_smoke_db
    browser = chromium()
    engine = make_smoke_db(tmp_path)
    index = render_site(engine, tmp_path / "site")
    url = index.as_uri() + "#sort=-3"                  # the first table: sort by PGD-10 ε=0.1
    proc = run_chromium(browser, tmp_path / "profile", "--dump-dom", url)
    dom = proc.stdout
    assert proc.returncode == 0, proc.stderr[-2000:]
    m = re.search(r'<table class="grid sortable smoke-table" id="grid-smoke-mnist" '
                  r'data-sorter="ready">(.*?)</table>', dom, re.S)
    assert m, "no smoke grid on the index page"
    grid = m.group(1)
    for text in ("Natural", "PGD-10 ε=0.1", "PGD-10 ε=0.3", "FGSM ε=0.3", "Worst case (ε = 0.3)",
                 "Zeta (smoke)", "Alpha &amp; co (smoke)", "95.00", "70.00", "30.00", "20.00",
                 "SMOKE", "not run"):
        assert text in grid, text
    # sorted by PGD-10 ε=0.1, descending: alpha (70) before zeta (60)
    assert re.findall(r'<tr id="smoke-mnist-row-(\d)">', grid) == ["1", "0"]
    assert dom.index('id="grid-smoke-mnist"') < dom.index("<h2>Tables</h2>")
    assert re.search(r'<pre id="js-errors" hidden="">\s*</pre>', dom)
    assert console_errors(proc.stderr) == []
    shot = tmp_path / "index.png"
    proc = run_chromium(browser, tmp_path / "profile-shot", f"--screenshot={shot}",
                        "--window-size=1280,900", index.as_uri())
    assert shot.exists(), proc.stderr[-2000:]
    width, height, rows = png_rgb(shot)
    assert (width, height) == (1280, 900)
    # the SMOKE badges and banner (#ffe0e6) are drawn in the first screen
    assert count_color(rows, (0xFF, 0xE0, 0xE6), tol=6) > 500
    if os.environ.get("BENCH_SCREENSHOT_DIR"):
        shutil.copy(shot, Path(os.environ["BENCH_SCREENSHOT_DIR"]) / "index.png")


def test_a_recipe_verdict_keeps_its_own_colour_inside_a_row_of_another(tmp_path):
    """On the Reproduction page a recipe listed under a paper value has its own verdict: a
    reproduced recipe under a row that is above or below is drawn green (#1e7d32), not in
    the row's red. Every paper cell here misses its printed value, so the only green on
    screen is the recipe's."""
    from sqlalchemy.orm import Session

    from test_report import add_result, correct_range
    from test_reproduction import RECIPES, _record
    browser = chromium()
    text = RECIPES.replace("m_a: {Benign: 99.0, PGD-20: 61.0}", "m_a: {Benign: 90.0, PGD-20: 70.0}")
    _, engine = _record(tmp_path, text, beta_pgd=45)      # Beta 45 vs 40: above
    with Session(engine) as s:                             # the recipe: 70 vs 70, reproduced
        add_result(s, model="m_c", model_key="kc", attack="pgd", eps_literal="0.3", eps=0.3,
                   correct=correct_range(100, 0, 70))
        s.commit()
    page = render_site(engine, tmp_path / "site").parent / "reproduction.html"
    dom = page.read_text()
    assert 'class="verdict-below"' in dom and '<li class="verdict-reproduced">' in dom
    assert 'class="verdict-reproduced"' not in dom.replace('<li class="verdict-reproduced">', "")
    shot = tmp_path / "repro.png"
    proc = run_chromium(browser, tmp_path / "profile", f"--screenshot={shot}",
                        "--window-size=1400,900", page.as_uri())
    assert shot.exists(), proc.stderr[-2000:]
    _, _, rows = png_rgb(shot)
    assert count_color(rows, (0xB3, 0x26, 0x1E), tol=20) > 20     # the rows' red verdicts
    assert count_color(rows, (0x1E, 0x7D, 0x32), tol=20) > 20     # the recipe's green one
