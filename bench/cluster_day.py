"""One simulated day through the code location, on local Spark or a standalone cluster: seconds and peak memory.

    .venv/bin/python bench/cluster_day.py --devices 1000 --cluster        # master + 2 workers on 127.0.0.1
    .venv/bin/python bench/cluster_day.py --devices 1000 10000            # local mode, the cost curve

The same assets and resources as `dagster dev` (registry, clean readings, the three feature sizes,
device_objects) run with `dagster.materialize`; only `FS_SPARK_MASTER` differs. Peak memory is the
largest sum of resident memory of this process and every JVM it or the cluster started, sampled
at most every half second. Writes `bench/results/<--results-name>.json` (default `cluster_day`) with
the commit, versions, cores and load (`bench.results.write_results`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.results import write_results  # noqa: E402

DAY = date(2026, 1, 5)


def pss_kb(pid: str) -> int:
    """The process's proportional set size in KB (0 once it has ended)."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:  # the process ended between the listing and the read
        pass
    return 0


class PeakMemory:
    """Largest total memory of this process, every JVM and every Spark Python worker, sampled from /proc.

    Summed as PSS (each shared page split among the processes sharing it), not RSS: a process
    forked by a 15 GB JVM (Hadoop shells out for file permissions) shares its pages until it
    execs, and RSS counted them twice; a 100,000-device day summed to 31 GB on a 23 GB machine
    without swap."""

    def __init__(self):
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> int:
        total = pss_kb(str(os.getpid()))
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    cmd = (entry / "cmdline").read_bytes()
                except OSError:
                    continue
                if b"java" in cmd.split(b"\0")[0] or b"pyspark" in cmd:
                    total += pss_kb(entry.name)
        return total

    def _run(self):
        # Reading a 12 GB JVM's PSS walks its page tables: about 40 ms at 5 GB, with the JVM's
        # memory map locked meanwhile. Every half second, that taxed the measured run more than the
        # reference; waiting twenty times the last sample's cost keeps sampling under 5 % of a core.
        while not self._stop.is_set():
            started = time.perf_counter()
            self.peak = max(self.peak, self._sample())
            self._stop.wait(max(0.5, 20 * (time.perf_counter() - started)))

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def run_day(devices: int, master: str) -> dict:
    import dagster as dg

    from definitions import defs
    from fs_assets.features.assets import feature_assets
    from fs_assets.ingest.assets import clean_sensor_readings, device_registry
    from fs_assets.ontology.assets import device_objects as objects
    from fs_resources.simulator.fleet import FleetSpec, generate

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["FS_DATA_ROOT"] = f"{tmp}/data"
        os.environ["FS_SPARK_MASTER"] = master
        generate(FleetSpec.clean(devices=devices, start=DAY, days=1, seed=3), f"{tmp}/data")
        assets = [device_registry, clean_sensor_readings, *feature_assets]
        # The code location's own resources: the Spark master comes from FS_SPARK_MASTER alone.
        resources = {k: v for k, v in defs.resources.items() if k in ("spark", "delta", "feature_store")}
        steps = {}
        with dg.instance_for_test() as instance, PeakMemory() as memory:
            started = time.perf_counter()
            assert dg.materialize(assets[:1], resources=resources, instance=instance).success
            steps["registry_seconds"] = time.perf_counter() - started
            t = time.perf_counter()
            assert dg.materialize(
                assets[1:2], partition_key=DAY.isoformat(), resources=resources, instance=instance, selection=[assets[1].key]
            ).success
            steps["clean_seconds"] = time.perf_counter() - t
            t = time.perf_counter()
            assert dg.materialize(assets[2:], partition_key=DAY.isoformat(), resources=resources, instance=instance).success
            steps["features_seconds"] = time.perf_counter() - t
            t = time.perf_counter()
            assert dg.materialize([objects], resources=resources, instance=instance).success
            steps["device_objects_seconds"] = time.perf_counter() - t
            total = time.perf_counter() - started
            from fs_resources.spark import get_spark_session

            session = get_spark_session()
            feature_rows = session.read.format("delta").load(f"{tmp}/data/delta/device_features/v1").count()
            actual_master = session.sparkContext.master
            executors = session.sparkContext._jsc.sc().getExecutorMemoryStatus().size() - (0 if master.startswith("local") else 1)
        return {
            "devices": devices,
            "readings": devices * 1440,
            "master": actual_master,
            "executors": executors,
            "seconds": round(total, 1),
            **{k: round(v, 1) for k, v in steps.items()},
            "peak_memory_mb": round(memory.peak / 1024),
            "feature_rows": feature_rows,
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, nargs="+", default=[1000])
    parser.add_argument("--cluster", action="store_true", help="start a master and two workers on 127.0.0.1 and use them")
    parser.add_argument("--results-name", default="cluster_day", help="bench/results/<name>.json")
    parser.add_argument("--out", help=argparse.SUPPRESS)  # one size's run, for the process that runs several
    args = parser.parse_args(argv)
    if len(args.devices) > 1:
        # One Spark session per process: each size runs in its own process.
        import subprocess

        runs = []
        for n in args.devices:
            out = Path(tempfile.mkstemp(suffix=".json")[1])
            subprocess.run(
                [sys.executable, __file__, "--devices", str(n), "--out", str(out)] + (["--cluster"] if args.cluster else []), check=True
            )
            runs.append(json.loads(out.read_text())["runs"][0])
        write_results(args.results_name, {"runs": runs})
        return 0
    cluster = None
    master = "local[2]"
    if args.cluster:
        from fs_resources.spark_cluster import StandaloneCluster

        cluster = StandaloneCluster(Path(tempfile.mkdtemp()) / "cluster", workers=2, cores_per_worker=1, memory_per_worker="2g")
        master = cluster.start()
        print(f"standalone cluster at {master} (2 workers)", flush=True)
    try:
        result = run_day(args.devices[0], master)
    finally:
        if cluster is not None:
            cluster.stop()
    print(json.dumps(result), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps({"runs": [result]}) + "\n")
    else:
        write_results(args.results_name, {"runs": [result]})
    return 0


if __name__ == "__main__":
    sys.exit(main())
