"""bandit over the code bench ships: no unsafe pickle, yaml, subprocess or URL use.

Gated at medium severity and above, because the unsafe calls bench must never make are
there (pickle.load and friends are medium; yaml.load, shell=True and weak hashes are
high). A finding that is reviewed and safe carries `# nosec BXXX` with its reason beside it.
"""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import REPO

SHIPPED = ["bench", "attacks", "defenses", "models", "executors"]


def test_bandit_finds_nothing_of_medium_or_high_severity():
    proc = subprocess.run([sys.executable, "-m", "bandit", "-q", "-r", *SHIPPED, "-ll", "-f", "json"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    report = json.loads(proc.stdout or "{}")
    findings = [f"{r['filename']}:{r['line_number']}: {r['test_id']} {r['issue_text']}"
                for r in report.get("results", [])]
    assert not findings, "bandit:\n" + "\n".join(findings)
    assert report.get("metrics", {}).get("_totals", {}).get("loc", 0) > 5000, "bandit read no code"

