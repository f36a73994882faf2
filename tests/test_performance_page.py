"""docs/performance.md is what `bench/performance_page.py` writes from the results files as they are:
a figure and its file cannot disagree."""

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import performance_page  # noqa: E402


@pytest.mark.unit
def test_the_performance_page_is_generated_from_the_results_files_as_they_are():
    assert performance_page.PAGE.read_text() == performance_page.page(), "run `make docs` (bench/performance_page.py)"


@pytest.mark.unit
def test_every_results_file_has_a_section_and_a_missing_commit_is_said(tmp_path):
    for f in performance_page.RESULTS.glob("*.json"):
        (tmp_path / f.name).write_text(f.read_text())
    stale = json.loads((tmp_path / "clean.json").read_text())
    del stale["commit"]
    (tmp_path / "clean.json").write_text(json.dumps(stale))
    text = performance_page.page(tmp_path)
    assert "Other results files" not in text and "(figures not read)" not in text
    clean = text.split("`clean.json`", 1)[1].split("## ", 1)[0]
    assert "**no commit recorded**" in clean and "ratio, ours / DuckDB" in clean


@pytest.mark.unit
def test_a_results_file_says_how_much_cpu_the_host_took_away_while_it_was_measured():
    from bench.results import steal_share

    # user nice system idle iowait irq softirq steal: 100 ticks, 25 of them stolen.
    assert steal_share([0] * 10, [40, 0, 10, 20, 5, 0, 0, 25, 0, 0]) == 0.25
    assert steal_share([0] * 10, [0] * 10) is None
    assert steal_share(None, [1] * 10) is None


@pytest.mark.unit
def test_a_training_results_file_as_the_benchmark_writes_it_mid_run_is_read_and_said_unfinished(tmp_path):
    from argparse import Namespace

    from bench.training_bench import report

    args = Namespace(devices=100_000, days=365, hourly_days=182, hourly_share=0.1)
    run = {"rows": 36_500_000, "positives": 13_750, "with_features": 36_500_000, "model": "device_health_1d", "repeat": 0}
    runs = [
        run | {"side": "ours", "seconds": 1500.0, "peak_pss_mb": 11_000},
        run | {"side": "reference", "seconds": 300.0, "peak_pss_mb": 19_000},
    ]
    results = report(args, {"daily_windows": 36_500_000}, [0.5, 0.5, 0.5], runs, finished=False)
    (tmp_path / "training.json").write_text(json.dumps(results | {"commit": "0" * 40}))
    section = performance_page.page(tmp_path).split("`training.json`", 1)[1]
    assert "(figures not read)" not in section
    assert "device_health_1d: 36,500,000 rows" in section and "**5.0x**" in section and "same rows, labels and matches: True" in section
    assert "the benchmark stopped before its last run" in section
