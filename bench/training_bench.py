"""Benchmark: training sets at the design's scale, through the asset, against DuckDB's ASOF join.

    FS_SPARK_DRIVER_MEMORY=10g .venv/bin/python bench/training_bench.py                 (both models)
    .venv/bin/python bench/training_bench.py --devices 1000 --days 30 --hourly-days 10     (a trial)
    ... --models device_health_1d                                                           (one model)

Inputs are synthesized straight into Delta (cleaning bypassed): a registry of `--devices`, a year
(`--days`) of 1-day windows of every device, `--hourly-days` of 1-hour windows for a
`--hourly-share` of the devices (the design's 10 %), and failure events for 2 % of the devices.
Then, for each model, alternating `--repeats` times:

- ours: `training_dataset` materialized as the UI launches it (a cold `dagster asset materialize`
  process), for the model over the whole range (the hourly model with `device_share` set to the
  hourly share: the devices that have hourly windows);
- the reference: DuckDB reading the same Parquet files and writing the same rows (entities of
  every device at the model's cadence, the label from the next failure within the horizon by an
  ASOF join, the features of the latest window within the tolerance by an ASOF join) to Parquet.

Wall time, peak memory (PSS summed over the measured process and every descendant: the JVM
included) and rows per second. Writes `bench/results/training.json` after every run (`finished`
false until the last): at the design's scale one run takes about half an hour.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.results import write_results  # noqa: E402

START = datetime(2025, 1, 1, tzinfo=UTC)
FAILING_SHARE = 0.02
MODELS = ("device_health_1d", "compressor_failure_1h")


def _pss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo += children.get(pid, [])
    return out


class TreePeak:
    """Peak PSS of a process and all its descendants, sampled every half second."""

    def __init__(self, pid: int):
        self.pid, self.peak_kb = pid, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.wait(0.5):
            self.peak_kb = max(self.peak_kb, sum(_pss_kb(p) for p in _tree(self.pid)))

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return round(self.peak_kb / 1024)


def synthesize(root: Path, devices: int, days: int, hourly_days: int, hourly_share: float) -> dict:
    """Registry, maintenance events and the v1 features table, written by Spark straight into Delta."""
    from pyspark.sql import functions as F

    from fs_domain.models import model_spec
    from fs_domain.tables import MAINTENANCE_TABLE, REGISTRY_TABLE, features_table
    from fs_resources.spark import get_spark_session

    spark = get_spark_session()
    tables = root / "delta"
    ids = spark.range(devices).select(F.format_string("dev-%06d", F.col("id")).alias("device_id"), F.col("id").alias("n"))
    ids.select("device_id", F.lit("site-0001").alias("site_id"), F.lit("active").alias("status")).write.format("delta").save(
        str(tables / REGISTRY_TABLE)
    )
    failing = ids.where(F.col("n") % int(1 / FAILING_SHARE) == 0)
    events = failing.select(
        "device_id",
        (F.lit(START).cast("timestamp") + F.make_interval(days=(F.col("n") * 7919 % days).cast("int"), hours=F.lit(13))).alias(
            "event_time"
        ),
        F.lit("failure").alias("event_type"),
    )
    events.write.format("delta").save(str(tables / MAINTENANCE_TABLE))

    def windows(model: str, minutes: int, devices_of, n_days: int):
        spec = model_spec(model, "v1")
        slots = spark.range(n_days * (1440 // minutes)).withColumnRenamed("id", "slot")
        start = F.timestamp_seconds(F.lit(int(START.timestamp())) + F.col("slot") * F.lit(minutes * 60))
        columns = [
            "device_id",
            start.alias("window_start"),
            F.timestamp_seconds(F.unix_seconds(start) + F.lit(minutes * 60)).alias("window_end"),
            F.to_date(start).alias("window_date"),
            F.lit(minutes).alias("window_duration_minutes"),
        ]
        columns += [(F.rand(seed=i) * 10 - 5).alias(f) for i, f in enumerate(spec.features) if f != "reading_count"]
        if "reading_count" in spec.features:
            columns.append(F.lit(minutes - 1).cast("long").alias("reading_count"))
        return devices_of.select("device_id").crossJoin(slots).select(*columns)

    path = str(tables / features_table("v1"))
    # The hourly model's devices: the share `training_dataset` samples with `device_share` (its hash, seed 0).
    hourly_ids = ids.where((F.abs(F.xxhash64("device_id", F.lit(0))) % 1_000_000) < F.lit(int(hourly_share * 1_000_000)))
    n_hourly = hourly_ids.count()
    daily = windows("device_health_1d", 1440, ids, days)
    hourly = windows("compressor_failure_1h", 60, hourly_ids, hourly_days)
    daily.write.format("delta").partitionBy("window_date", "window_duration_minutes").save(path)
    hourly.write.format("delta").mode("append").option("mergeSchema", "true").partitionBy("window_date", "window_duration_minutes").save(
        path
    )
    counts = {"daily_windows": devices * days, "hourly_devices": n_hourly, "hourly_windows": n_hourly * hourly_days * 24}
    spark.stop()
    return counts


def run_ours(root: Path, home: Path, model: str, config: dict) -> dict:
    import yaml

    cfg = home / f"{model}.yaml"
    cfg.write_text(yaml.safe_dump({"ops": {"training_dataset": {"config": config}}}))
    env = {**os.environ, "FS_DATA_ROOT": str(root), "DAGSTER_HOME": str(home)}
    cmd = [str(ROOT / ".venv/bin/dagster"), "asset", "materialize", "-m", "definitions", "--select", "training_dataset"]
    cmd += ["--partition", model, "-c", str(cfg)]
    return measured(cmd, env, "training_dataset")


def measured(cmd: list[str], env: dict | None, what: str) -> dict:
    """Run `cmd` to its end: its wall time and the peak PSS of its process tree."""
    started = time.perf_counter()
    process = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak = TreePeak(process.pid)
    output, _ = process.communicate()
    seconds = time.perf_counter() - started
    memory = peak.stop()
    if process.returncode:
        raise RuntimeError(f"{what} failed:\n{output[-3000:]}")
    return {"seconds": round(seconds, 1), "peak_pss_mb": memory}


REFERENCE_SQL = """
CREATE TABLE devices AS SELECT DISTINCT device_id FROM read_parquet('{device_source}', hive_partitioning = false);
CREATE TABLE entities AS
  SELECT d.device_id, t.generate_series AS event_time
  FROM devices d, generate_series(TIMESTAMPTZ '{first}', TIMESTAMPTZ '{last}', INTERVAL '{every} seconds') t;
CREATE TABLE failures AS
  SELECT device_id, event_time AS next_event FROM read_parquet('{tables}/maintenance_events/*.parquet') WHERE event_type = 'failure';
CREATE TABLE labelled AS
  SELECT e.device_id, e.event_time,
         CASE WHEN f.next_event IS NOT NULL AND f.next_event <= e.event_time + INTERVAL '{horizon} seconds' THEN 1 ELSE 0 END AS label,
         CASE WHEN f.next_event <= e.event_time + INTERVAL '{horizon} seconds'
              THEN epoch(f.next_event - e.event_time) / 3600.0 END AS hours_to_event
  FROM entities e ASOF LEFT JOIN failures f ON e.device_id = f.device_id AND f.next_event > e.event_time;
COPY (
  SELECT '{model}' AS model, 'v1' AS feature_set_version, l.device_id, l.event_time, l.label, l.hours_to_event,
         {features},
         CASE WHEN w.window_end >= l.event_time - INTERVAL '{tolerance} seconds' THEN w.window_end END AS feature_window_end,
         TIMESTAMPTZ '{as_of}' AS features_as_of, 0::BIGINT AS features_delta_version, 0::BIGINT AS maintenance_delta_version
  FROM labelled l ASOF LEFT JOIN (
    SELECT * FROM read_parquet('{tables}/device_features/v1/*/window_duration_minutes={minutes}/*.parquet', hive_partitioning = false)
  ) w ON l.device_id = w.device_id AND w.window_end <= l.event_time
) TO '{out}' (FORMAT parquet);
"""


def run_reference(root: Path, out: Path, model: str, start: datetime, end: datetime, share: float) -> dict:
    """DuckDB in a process of its own, so its memory is measured like ours."""
    from fs_domain.models import model_spec

    spec = model_spec(model, "v1")
    features = ", ".join(
        f"CASE WHEN w.window_end >= l.event_time - INTERVAL '{int(spec.tolerance.total_seconds())} seconds' THEN w.{f}::DOUBLE END AS {f}"
        for f in spec.features
    )
    # The devices: every one, or the share the asset samples (exactly those the hourly windows were synthesized for).
    tables = root / "delta"
    device_source = (
        f"{tables}/device_registry/*.parquet"
        if share >= 1
        else f"{tables}/device_features/v1/*/window_duration_minutes={spec.window_minutes}/*.parquet"
    )
    sql = REFERENCE_SQL.format(
        tables=tables,
        device_source=device_source,
        first=(start + spec.sample_every).isoformat(),
        last=end.isoformat(),
        every=int(spec.sample_every.total_seconds()),
        horizon=int(spec.label_horizon.total_seconds()),
        model=model,
        features=features,
        tolerance=int(spec.tolerance.total_seconds()),
        as_of=datetime.now(UTC).isoformat(),
        minutes=spec.window_minutes,
        out=out,
    )
    script = f"import duckdb; c = duckdb.connect(); c.execute(\"SET TimeZone = 'UTC'\"); c.execute({sql!r})"
    result = measured([sys.executable, "-c", script], None, "the DuckDB reference")
    import pyarrow.parquet as pq

    return result | _tally(pq.read_table(out, columns=["label", "feature_window_end"]))


def _tally(table) -> dict:
    """Rows, positives and rows with features: both sides must agree on them."""
    import pyarrow.compute as pc

    matched = table.num_rows - table["feature_window_end"].null_count
    return {"rows": table.num_rows, "positives": int(pc.sum(table["label"]).as_py() or 0), "with_features": matched}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--hourly-days", type=int, default=182)
    parser.add_argument("--hourly-share", type=float, default=0.1)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS), help="the models to build (default: both)")
    parser.add_argument("--work-dir", default=None, help="where the data goes (default: a temporary folder, removed after)")
    args = parser.parse_args(argv)

    load_before = [round(x, 2) for x in os.getloadavg()]
    name = "training" if args.devices >= 100_000 else f"training_{args.devices}"
    runs: list[dict] = []
    with tempfile.TemporaryDirectory(dir=args.work_dir) as tmp:
        root, home = Path(tmp) / "data", Path(tmp) / "dagster_home"
        home.mkdir()
        os.environ["FS_DATA_ROOT"] = str(root)
        started = time.perf_counter()
        inputs = synthesize(root, args.devices, args.days, args.hourly_days, args.hourly_share)
        print(f"inputs {inputs} synthesized in {time.perf_counter() - started:.0f} s", flush=True)
        plans = {
            "device_health_1d": (START, START + timedelta(days=args.days), 1.0),
            "compressor_failure_1h": (START, START + timedelta(days=args.hourly_days), args.hourly_share),
        }
        plans = {model: plan for model, plan in plans.items() if model in args.models}
        for repeat in range(args.repeats):
            for model, (start, end, share) in plans.items():
                config = {"start": start.date().isoformat(), "end": (end - timedelta(days=1)).date().isoformat(), "device_share": share}
                order = ("ours", "reference") if repeat % 2 == 0 else ("reference", "ours")
                for side in order:
                    if side == "ours":
                        result = run_ours(root, home, model, config)
                        from deltalake import DeltaTable

                        written = DeltaTable(str(root / "delta" / "training_datasets" / "v1" / model))
                        result |= _tally(written.to_pyarrow_table(columns=["label", "feature_window_end"]))
                    else:
                        out = Path(tmp) / f"reference_{model}.parquet"
                        result = run_reference(root, out, model, start, end, share)
                        out.unlink()
                    result |= {"side": side, "model": model, "repeat": repeat, "rows_per_second": round(result["rows"] / result["seconds"])}
                    runs.append(result)
                    print(result, flush=True)
                    # Written after every run: a run of half an hour is kept if a later one is lost.
                    write_results(name, report(args, inputs, load_before, runs, finished=False))
        shutil.rmtree(root, ignore_errors=True)
    write_results(name, report(args, inputs, load_before, runs, finished=True))
    return 0


def report(args: argparse.Namespace, inputs: dict, load_before: list[float], runs: list[dict], finished: bool) -> dict:
    """The results so far: each model measured on both sides, summarized, and every run."""
    summary = {}
    for model in MODELS:
        sides = {s: [r for r in runs if r["model"] == model and r["side"] == s] for s in ("ours", "reference")}
        if not all(sides.values()):
            continue
        ours, ref = (statistics.median(r["seconds"] for r in sides[s]) for s in ("ours", "reference"))
        summary[model] = {
            "rows": sides["ours"][0]["rows"],
            "reference_rows": sides["reference"][0]["rows"],
            "same_rows_positives_and_matches": all(
                sides["ours"][0][k] == sides["reference"][0][k] for k in ("rows", "positives", "with_features")
            ),
            "seconds": ours,
            "reference_seconds": ref,
            "ratio": round(ours / ref, 2),
            "peak_pss_mb": max(r["peak_pss_mb"] for r in sides["ours"]),
            "reference_peak_pss_mb": max(r["peak_pss_mb"] for r in sides["reference"]),
            "rows_per_second": round(sides["ours"][0]["rows"] / ours),
        }
    return {
        "devices": args.devices,
        "days": args.days,
        "hourly_days": args.hourly_days,
        "hourly_share": args.hourly_share,
        "inputs": inputs,
        "cores": os.cpu_count(),
        "spark_driver_memory": os.environ.get("FS_SPARK_DRIVER_MEMORY", "4g"),
        "load_average_before": load_before,
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "models": summary,
        "runs": runs,
        "finished": finished,
        "note": "ours: a cold `dagster asset materialize` of training_dataset; reference: DuckDB in its own process, "
        "same inputs, same output columns, to Parquet; peak memory is the PSS of each process tree.",
    }


if __name__ == "__main__":
    sys.exit(main())
