"""Benchmark: freshness under live load, the fleet writing while the daemon and its sensors run.

    FS_SPARK_DRIVER_MEMORY=6g .venv/bin/python bench/live_freshness.py --devices 100000 --minutes 30

In a fresh data root and Dagster instance, as `make run` and `make sim-live` would: an embedded
Redis, `dagster-daemon` on the code location (every sensor and schedule at its default, the
instance settings of `dagster_home/dagster.yaml`: two runs at a time), and `fs-sim live` writing a
landing file of the fleet's latest readings every `--interval` seconds. Its first iteration catches
up from midnight (many files at 100,000 devices) and lands before the daemon starts; the measured
window opens once the pipeline has carried that catch-up to the online store (or after
`--catch-up-minutes`), and lasts `--minutes`. Then the simulator stops and the pipeline drains.

For each landing file of the measured window, from its modification time:
- to clean readings: the commit to `clean_sensor_readings` of the run that cleaned it (the ledger
  names the run; the commit's userMetadata names the run);
- to 15-minute (1-hour, 1-day) features: the first materialization of that size whose
  `clean_delta_version` includes that commit (its windows closed by then are written);
- to the online store: the first `device_online_store` run started after the served windows'
  features included it.
Beside them, by data time: for each 15-minute window closed in the window, from its end to the first
materialization whose `latest_window_end` reaches it. And per kind of run: count, duration and queue
wait (p50, p95), and the growth of duration over the window (median of the last third against the
first), which is what says whether a run's cost grows with the day.

Targets: landing to clean p95 under 5 minutes, to 15-minute features p95 under 15, no growth.
Writes `bench/results/live_freshness_<devices>.json`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.cluster_day import pss_kb  # noqa: E402
from bench.fresh_instance import FreshInstance  # noqa: E402
from bench.results import write_results  # noqa: E402

TARGET_CLEAN_P95_SECONDS = 5 * 60
TARGET_FEATURES_P95_SECONDS = 15 * 60
FEATURE_ASSETS = ("device_features_15m", "device_features_1h", "device_features_1d")
ONLINE_ASSET = "device_online_store"


def percentiles(values: list[float]) -> dict:
    if not values:
        return {"count": 0}
    ordered = sorted(values)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))], 1)

    return {"count": len(values), "p50_seconds": at(0.5), "p95_seconds": at(0.95), "max_seconds": round(ordered[-1], 1)}


class TreeMemory:
    """Peak PSS summed over every process of the given sessions (daemon, its code server, each run
    and its JVM, the simulator) and the embedded Redis, sampled every two seconds."""

    def __init__(self, marker: str, sessions: set[int]):
        self.marker = marker.encode()
        self.sessions = sessions
        self.peak_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _sample(self) -> int:
        total = 0
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if os.getsid(int(entry.name)) in self.sessions or self.marker in (entry / "cmdline").read_bytes():
                    total += pss_kb(entry.name)
            except OSError:
                continue
        return total

    def _run(self):
        while not self._stop.wait(2.0):
            self.peak_kb = max(self.peak_kb, self._sample())

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return round(self.peak_kb / 1024)


class Observed:
    """What the instance and the tables say happened, read again on each call."""

    def __init__(self, root: Path):
        import dagster as dg
        from deltalake import DeltaTable

        from fs_domain.tables import CLEAN_TABLE, LEDGER_TABLE
        from fs_resources import settings

        self.dg, self.DeltaTable = dg, DeltaTable
        self.instance = dg.DagsterInstance.get()
        self.tables = settings.tables_root(str(root))
        self.clean, self.ledger = f"{self.tables}/{CLEAN_TABLE}", f"{self.tables}/{LEDGER_TABLE}"
        self.landing = Path(settings.landing_root(str(root)))
        self.rows: dict[str, int] = {}

    def materializations(self, asset: str) -> list:
        result = self.instance.fetch_materializations(self.dg.AssetKey(asset), limit=10_000, ascending=True)
        return list(result.records)

    def _open(self, path: str):
        """The Delta table at `path`, or None while it does not exist or its first commit is being written."""
        try:
            return self.DeltaTable(path)
        except Exception:  # deltalake's TableNotFoundError, or a log without its first commit yet
            return None

    def files(self) -> list[dict]:
        """Each landing file (ledgered or not yet) with its landing time and the clean commit that cleaned it."""
        import pyarrow.parquet as pq

        ledger = {}
        if table := self._open(self.ledger):
            for row in table.to_pyarrow_table(columns=["source_file", "run_id"]).to_pylist():
                ledger["/".join(row["source_file"].rsplit("/", 2)[-2:])] = row["run_id"]
        commits: dict[str, tuple[int, float]] = {}
        for commit in table.history() if (table := self._open(self.clean)) else []:
            meta = commit.get("userMetadata") or ""
            if meta.startswith("fs-write:"):
                run_id = meta.split(":")[1]
                version, at = commit["version"], commit["timestamp"] / 1000
                if run_id not in commits or version > commits[run_id][0]:
                    commits[run_id] = (version, at)
        files = []
        for path in sorted(self.landing.glob("date=*/*.parquet")):
            name = f"{path.parent.name}/{path.name}"
            version, at = commits.get(ledger.get(name), (None, None))
            if name not in self.rows:
                self.rows[name] = pq.ParquetFile(path).metadata.num_rows
            files.append({"file": name, "landed": path.stat().st_mtime, "rows": self.rows[name], "clean_version": version, "clean_at": at})
        return sorted(files, key=lambda f: f["landed"])

    def consumed(self, records: list, version: int) -> float | None:
        """When the first materialization that read clean version `version` or later was written."""
        for r in records:
            md = r.asset_materialization.metadata
            if "clean_delta_version" in md and md["clean_delta_version"].value >= version:
                return r.timestamp
        return None

    def run_start(self, run_id: str) -> float | None:
        record = self.instance.get_run_record_by_id(run_id)
        return record.start_time if record else None

    def latencies(self, served: list[str]) -> list[dict]:
        by_asset = {a: self.materializations(a) for a in FEATURE_ASSETS}
        online = [(self.run_start(r.run_id), r.timestamp) for r in self.materializations(ONLINE_ASSET)]
        out = []
        for f in self.files():
            if f["clean_version"] is None:
                out.append(f)
                continue
            f = f | {a: self.consumed(by_asset[a], f["clean_version"]) for a in FEATURE_ASSETS}
            needed = [f[a] for a in served]
            f[ONLINE_ASSET] = next((done for started, done in online if started and started >= max(needed)), None) if all(needed) else None
            out.append(f)
        return out

    def runs(self) -> list:
        return list(self.instance.get_run_records(limit=10_000, ascending=True))


def run_kind(run) -> str:
    if run.job_name != "__ASSET_JOB":
        return run.job_name
    if run.asset_selection:
        return "+".join(sorted(k.path[-1] for k in run.asset_selection))
    checked = sorted({k.asset_key.path[-1] for k in (run.asset_check_selection or [])})
    return f"checks of {'+'.join(checked)}" if checked else run.job_name


def run_costs(records: list, opened: float, closed: float) -> dict:
    """Per kind of run started in the window: count, duration and queue wait, and growth of duration."""
    kinds: dict[str, list] = {}
    for r in records:
        if r.start_time and r.end_time and opened <= r.start_time <= closed:
            kinds.setdefault(run_kind(r.dagster_run), []).append(r)
    out = {}
    for kind, runs in sorted(kinds.items()):
        durations = [r.end_time - r.start_time for r in runs]
        waits = [r.start_time - r.create_timestamp.timestamp() for r in runs]
        third = max(1, len(durations) // 3)
        first, last = statistics.median(durations[:third]), statistics.median(durations[-third:])
        out[kind] = {
            "runs": len(runs),
            "failed": sum(r.dagster_run.status.value == "FAILURE" for r in runs),
            "duration": percentiles(durations),
            "queue_wait": percentiles(waits),
            "duration_median_first_third_seconds": round(first, 1),
            "duration_median_last_third_seconds": round(last, 1),
            "growth_last_to_first": round(last / first, 2) if first else None,
        }
    return out


def window_close_latency(records: list, opened: float, closed: float, minutes: int) -> list[float]:
    """For each window closed in [opened, closed): seconds from its end to the first materialization
    whose latest_window_end reaches it."""
    written = []
    for r in records:
        text = r.asset_materialization.metadata.get("latest_window_end")
        if text is not None and text.value != "none":
            written.append((r.timestamp, datetime.fromisoformat(text.value).replace(tzinfo=UTC).timestamp()))
    step = minutes * 60
    out = []
    end = (int(opened) // step + 1) * step
    while end < closed:
        first = next((at for at, latest in written if latest >= end), None)
        if first is not None:
            out.append(first - end)
        end += step
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=100_000)
    parser.add_argument("--minutes", type=float, default=30.0, help="length of the measured window")
    parser.add_argument("--interval", type=float, default=300.0, help="seconds between landing files")
    parser.add_argument("--catch-up-minutes", type=float, default=60.0, help="longest wait for the catch-up before measuring anyway")
    parser.add_argument("--drain-minutes", type=float, default=20.0, help="longest wait for the pipeline to catch up at the end")
    parser.add_argument("--work-dir", default=None, help="where the data and instance go (default: a temporary folder, removed after)")
    args = parser.parse_args(argv)

    from fs_assets.ontology.assets import VECTOR_SOURCES

    served = [a.key.path[-1] for a in VECTOR_SOURCES]
    with FreshInstance("fs-live-", args.work_dir) as stack:
        work, logs = stack.work, stack.logs
        memory = TreeMemory(str(work), stack.sessions)
        stack.redis("start")
        try:
            stack.dagster_instance()
            observed = Observed(stack.root)
            # The day so far lands before the daemon starts, as for a store deployed on a landing zone
            # that already holds the morning: its first run cleans that backlog whole. (Started together,
            # the sensor would clean the backlog's files in several runs as they are written, each
            # merging readings that span the day so far.)
            simulated = time.time()
            stack.start_simulator("--devices", str(args.devices), "--interval", str(args.interval))
            while "wrote" not in stack.log("simulator").read_text():
                if not stack.running("simulator"):
                    raise SystemExit(f"simulator exited with {stack.exited()['simulator']}; see {stack.log('simulator')}")
                time.sleep(5)
            backlog_seconds = time.time() - simulated
            print(f"the day so far landed in {backlog_seconds:.0f} s; starting the daemon", flush=True)
            began = time.time()
            stack.start_daemon()
            opened = None
            print(f"{args.devices:,} devices live under {work}; waiting for the catch-up to reach the online store", flush=True)
            while opened is None or time.time() < opened + args.minutes * 60:
                time.sleep(30)
                for name, code in stack.exited().items():
                    raise SystemExit(f"{name} exited with {code}; see {logs / name}.log")
                if opened is None:
                    files = observed.latencies(served)
                    caught_up = bool(files) and all(f.get(ONLINE_ASSET) for f in files)
                    if caught_up or time.time() > began + args.catch_up_minutes * 60:
                        opened = time.time()
                        print(
                            f"{'caught up' if caught_up else 'catch-up unfinished'} after {opened - began:.0f} s; measuring {args.minutes:g} minutes",
                            flush=True,
                        )
                else:
                    done = [f for f in observed.latencies(served) if f["landed"] >= opened]
                    print(
                        f"{time.time() - opened:5.0f} s: {len(done)} files landed, {sum(bool(f.get(ONLINE_ASSET)) for f in done)} online",
                        flush=True,
                    )
            closed = time.time()
            stack.stop("simulator")
            deadline = closed + args.drain_minutes * 60
            while time.time() < deadline:
                measured = [f for f in observed.latencies(served) if opened <= f["landed"] <= closed]
                if measured and all(f.get(ONLINE_ASSET) for f in measured):
                    break
                time.sleep(30)
        finally:
            stack.stop_all()
            peak_mb = memory.stop()

    files = observed.latencies(served)
    measured = [f for f in files if opened <= f["landed"] <= closed]
    catch_up = [f for f in files if f["landed"] < opened]

    def lag(rows: list[dict], key: str) -> dict:
        done = [f[key] - f["landed"] for f in rows if f.get(key)]
        return percentiles(done) | {"not_reached": len(rows) - len(done)}

    clean_lag = lag(measured, "clean_at")
    features_lag = lag(measured, "device_features_15m")
    runs = run_costs(observed.runs(), opened, closed)
    results = {
        "devices": args.devices,
        "readings_per_minute": args.devices,
        "interval_seconds": args.interval,
        "measured_minutes": round((closed - opened) / 60, 1),
        "catch_up": {
            "caught_up": caught_up,
            "files": len(catch_up),
            "readings": sum(f["rows"] for f in catch_up),
            "seconds_to_land": round(backlog_seconds),
            "seconds_to_online_store": round(opened - began),
        },
        "files_measured": len(measured),
        "readings_measured": sum(f["rows"] for f in measured),
        "landing_to_clean": clean_lag,
        "landing_to_features_15m": features_lag,
        "landing_to_features_1h": lag(measured, "device_features_1h"),
        "landing_to_online_store": lag(measured, ONLINE_ASSET),
        "online_store_served_windows": served,
        "window_close_to_features_15m": percentiles(
            window_close_latency(observed.materializations("device_features_15m"), opened, closed, 15)
        ),
        "runs": runs,
        "peak_memory_mb": peak_mb,
        "driver_memory": os.environ.get("FS_SPARK_DRIVER_MEMORY", "default"),
        "targets": {
            "landing_to_clean_p95_seconds": TARGET_CLEAN_P95_SECONDS,
            "landing_to_features_15m_p95_seconds": TARGET_FEATURES_P95_SECONDS,
            "clean_met": clean_lag.get("p95_seconds", float("inf")) < TARGET_CLEAN_P95_SECONDS and not clean_lag["not_reached"],
            "features_met": features_lag.get("p95_seconds", float("inf")) < TARGET_FEATURES_P95_SECONDS and not features_lag["not_reached"],
        },
        "files": [
            {k: (round(v - f["landed"], 1) if k in {"clean_at", ONLINE_ASSET, *FEATURE_ASSETS} and v else v) for k, v in f.items()}
            for f in files
        ],
    }
    for name, figures in (("clean", clean_lag), ("15-minute features", features_lag)):
        print(f"landing to {name}: p50 {figures.get('p50_seconds')} s, p95 {figures.get('p95_seconds')} s over {figures['count']} files")
    for kind, figures in runs.items():
        print(f"{kind}: {figures['runs']} runs, p50 {figures['duration'].get('p50_seconds')} s, growth {figures['growth_last_to_first']}")
    write_results(f"live_freshness_{args.devices}", results)
    if args.work_dir is None:
        stack.remove()
    else:
        print(f"data, instance and logs kept under {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
