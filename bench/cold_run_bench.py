"""Benchmark: a cold run, as the daemon launches one, with the driver's class archive and without.

    .venv/bin/python bench/cold_run_bench.py --devices 200 --repeats 5

Every run a sensor, a schedule or the UI launches is a new process: Python imports the code
location, Spark starts a driver JVM that loads Spark's and Delta's classes, then the step runs. The
class archive (`python -m fs_resources.spark`, in `make setup`) hands the JVM those classes already
parsed and verified. Both sides run the same command on the same data: `dagster asset materialize`
of `clean_sensor_readings` for one simulated day, as a rebuild of the day (the same reads and
writes every time), alternating (archive, none, archive, ...). The only difference is
`-XX:SharedArchiveFile` in the driver's Java options, both set through `FS_SPARK_CONF`.

For each run: wall time, CPU of its process tree (Python, the driver JVM, Spark's Python workers,
sampled every quarter second) and peak memory (PSS of the tree). Medians, slowest, every run.
Writes `bench/results/cold_run.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.cluster_day import pss_kb  # noqa: E402
from bench.fresh_instance import BIN, FreshInstance  # noqa: E402
from bench.results import write_results  # noqa: E402
from fs_resources.spark import class_archive_path, delta_spark_conf  # noqa: E402

DAY = date(2026, 1, 5)
SAMPLE_SECONDS = 0.25
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _stat(pid: str) -> tuple[int, float] | None:
    """(parent pid, CPU seconds) of a process from /proc, None once it has ended."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def _tree(top: int) -> dict[str, float]:
    """CPU seconds of `top` and every process below it."""
    stats = {entry.name: _stat(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit()}
    children: dict[int, list[str]] = {}
    for pid, stat in stats.items():
        if stat is not None:
            children.setdefault(stat[0], []).append(pid)
    found, todo = {}, [str(top)]
    while todo:
        pid = todo.pop()
        if stats.get(pid) is not None:
            found[pid] = stats[pid][1]
            todo += children.get(int(pid), [])
    return found


def timed_run(command: list[str], env: dict[str, str]) -> dict:
    """Run `command` to its end; its wall time, the CPU seconds of its process tree and their peak PSS."""
    started = time.monotonic()
    top = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    cpu: dict[str, float] = {}
    peak_kb = 0
    while top.poll() is None:
        tree = _tree(top.pid)
        cpu |= tree
        peak_kb = max(peak_kb, sum(pss_kb(pid) for pid in tree))
        time.sleep(SAMPLE_SECONDS)
    wall = time.monotonic() - started
    if top.wait() != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{top.stderr.read().decode(errors='replace')[-3000:]}")
    return {"seconds": round(wall, 2), "cpu_seconds": round(sum(cpu.values()), 2), "peak_memory_mb": round(peak_kb / 1024)}


def summary(runs: list[dict]) -> dict:
    def of(key: str) -> dict:
        values = [r[key] for r in runs]
        return {"median": round(statistics.median(values), 2), "max": max(values), "all": values}

    return {key: of(key) for key in ("seconds", "cpu_seconds", "peak_memory_mb")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5, help="runs of each side")
    parser.add_argument("--work-dir", default=None)
    args = parser.parse_args()

    archive = class_archive_path()
    if archive is None or not archive.exists():
        raise SystemExit(f"no class archive at {archive}: run `make setup` (python -m fs_resources.spark) first")
    options = delta_spark_conf()["spark.driver.extraJavaOptions"]
    without = options.replace(f" -XX:SharedArchiveFile={archive}", "")
    assert without != options, options
    sides = {"archive": options, "none": without}

    with FreshInstance("cold-run-", args.work_dir) as stack:
        subprocess.run(
            [str(BIN / "fs-sim"), "generate", "--devices", str(args.devices), "--start", DAY.isoformat(), "--days", "1"],
            env=stack.env, check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        materialize = [str(BIN / "dagster"), "asset", "materialize", "-m", "definitions"]
        subprocess.run([*materialize, "--select", "device_registry"], env=stack.env, cwd=ROOT, check=True, capture_output=True)
        clean = [*materialize, "--select", "clean_sensor_readings", "--partition", DAY.isoformat(),
                 "--config-json", json.dumps({"ops": {"clean_sensor_readings": {"config": {"rebuild": True}}}})]  # fmt: skip
        runs: dict[str, list[dict]] = {side: [] for side in sides}
        for i in range(args.repeats):
            for side, java_options in sides.items():
                env = stack.env | {"FS_SPARK_CONF": json.dumps({"spark.driver.extraJavaOptions": java_options})}
                runs[side].append(timed_run(clean, env))
                print(f"run {i + 1}/{args.repeats} {side:7s} {runs[side][-1]}", flush=True)

    result = {side: summary(r) for side, r in runs.items()}
    result["ratio_seconds_archive_to_none"] = round(result["archive"]["seconds"]["median"] / result["none"]["seconds"]["median"], 2)
    result["ratio_cpu_archive_to_none"] = round(result["archive"]["cpu_seconds"]["median"] / result["none"]["cpu_seconds"]["median"], 2)
    result["settings"] = {"devices": args.devices, "repeats": args.repeats, "day": DAY.isoformat(), "command": " ".join(clean[1:])}
    result["class_archive"] = {"file": archive.name, "megabytes": round(archive.stat().st_size / 2**20)}
    print(json.dumps({k: v for k, v in result.items() if k.startswith("ratio")}))
    write_results("cold_run", result)


if __name__ == "__main__":
    os.environ.pop("FS_SPARK_CONF", None)
    main()
