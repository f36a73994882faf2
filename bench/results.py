"""Where every benchmark writes its figures: `bench/results/<name>.json`, stamped with the time, the
commit measured, the stack's versions, the cores, the load when the benchmark started and ended, and
the share of CPU time the host took away meanwhile (steal, on a virtual machine)."""

import json
import os
import statistics
import subprocess
from datetime import UTC, datetime
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = RESULTS.parents[1]
LOAD_AT_START = os.getloadavg()[0]  # every benchmark imports this module before it measures


def cpu_times() -> list[int] | None:
    """The machine's CPU time by kind since boot (Linux's /proc/stat: user, nice, system, idle,
    iowait, irq, softirq, steal, ...), None where there is no /proc."""
    try:
        with open("/proc/stat") as stat:
            return [int(v) for v in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return None


CPU_AT_START = cpu_times()
STACK = ("pyspark", "delta-spark", "dagster", "pandas", "duckdb", "redis")


def source_state(measured: tuple[str, ...] = ()) -> dict:
    """The commit measured, and which files differed from it: of `measured` (the files the figures
    depend on) when given, else whether any tracked file did."""

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False).stdout

    state = {"commit": git("rev-parse", "HEAD").strip() or None}
    if measured:
        state["measured_files_changed_since_commit"] = [line[3:] for line in git("status", "--porcelain", "--", *measured).splitlines()]
    else:
        # Results files written earlier (by this benchmark's siblings in one batch) are not code.
        changed = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)bench/results")
        state["uncommitted_changes"] = bool(changed.strip())
    return state


def provenance(measured: tuple[str, ...]) -> dict:
    """`source_state(measured)` and the versions of the numeric libraries the figures come from."""
    import platform

    import numpy
    import pandas
    import scipy

    return source_state(measured) | {
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "pandas": pandas.__version__,
        "scipy": scipy.__version__,
    }


def machine() -> dict:
    """Cores, the one-minute load when the benchmark started and now, and the stack's versions."""
    from importlib.metadata import PackageNotFoundError, version

    def installed(package: str) -> str | None:
        try:
            return version(package)
        except PackageNotFoundError:
            return None

    return {
        "cores": os.cpu_count(),
        "load_at_start": round(LOAD_AT_START, 2),
        "load_at_end": round(os.getloadavg()[0], 2),
        "cpu_steal_share": steal_share(CPU_AT_START, cpu_times()),
        "versions": {package: installed(package) for package in STACK},
    }


def steal_share(start: list[int] | None, end: list[int] | None) -> float | None:
    """The share of CPU time the host gave to other machines while the benchmark ran (a virtual
    machine's "steal"): above a few percent, its figures were measured on a busy host."""
    if not start or not end or len(start) < 8 or len(end) < 8:
        return None
    spent = [b - a for a, b in zip(start, end)]
    total = sum(spent[:8])  # guest time is counted in user time already
    return round(spent[7] / total, 4) if total > 0 else None


# The tree as the benchmark started: the code it imported is what it measured, whatever is
# committed or edited while it runs.
STATE_AT_START = source_state()


def write_results(name: str, results: dict) -> Path:
    for key, value in (STATE_AT_START | machine()).items():
        results.setdefault(key, value)
    results.setdefault("measured_at", datetime.now(UTC).isoformat(timespec="seconds"))
    out_file = RESULTS / f"{name}.json"
    out_file.parent.mkdir(parents=True, exist_ok=True)
    out_file.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out_file}")
    return out_file


def against_reference(ours: list[float], theirs: list[float], ours_peak_mb: list[float], theirs_peak_mb: list[float]) -> dict:
    """Every run of both, their medians and maxima, the ratio of the medians, and both peaks of memory."""
    mine, ref = statistics.median(ours), statistics.median(theirs)
    return {
        "ours_seconds_all": [round(t, 1) for t in ours],
        "duckdb_seconds_all": [round(t, 1) for t in theirs],
        "ours_seconds_median": round(mine, 1),
        "ours_seconds_max": round(max(ours), 1),
        "duckdb_seconds_median": round(ref, 1),
        "duckdb_seconds_max": round(max(theirs), 1),
        "ratio_ours_to_duckdb": round(mine / ref, 2),
        "ours_peak_memory_mb": round(max(ours_peak_mb)),
        "duckdb_peak_memory_mb": round(max(theirs_peak_mb)),
    }
