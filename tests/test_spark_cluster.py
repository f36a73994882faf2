"""The same code location on a Spark standalone cluster (a master and two workers on 127.0.0.1),
selected by FS_SPARK_MASTER alone. Runs in its own process: a process holds one Spark session."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[1]
# The run proves the code location works on the cluster (two executors, every window written): two devices prove it with fewer rows.
DEVICES = 2


def test_a_day_materializes_on_a_standalone_cluster(tmp_path):
    out = tmp_path / "cluster.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "cluster_day.py"), "--devices", str(DEVICES), "--cluster", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (run,) = json.loads(out.read_text())["runs"]
    assert run["master"].startswith("spark://127.0.0.1:") and run["executors"] == 2
    assert run["feature_rows"] == DEVICES * (96 + 24 + 1)
