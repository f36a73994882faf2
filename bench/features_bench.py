"""Benchmark: one simulated day through all three window sizes, Spark (ours) against DuckDB.

    .venv/bin/python bench/features_bench.py --devices 1000 10000 --repeats 3

Both engines read the same Parquet readings and compute the same features; DuckDB is the
single-machine reference (it has no FFT, so the spectral entropy is left out of both sides of the
agreement check and DuckDB's time excludes it while ours includes it). Spark start-up is reported
apart. Prints a table and writes `bench/results/features.json`: medians of `--repeats` runs.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.results import write_results  # noqa: E402
from fs_assets.features.compute import window_features  # noqa: E402
from fs_domain.contract import SENSOR_NAMES  # noqa: E402
from fs_domain.features import COMPRESSOR_ON_AMPS, features_for  # noqa: E402
from fs_resources.simulator.fleet import FleetSpec, generate  # noqa: E402

DAY = date(2026, 1, 5)
WINDOWS = (15, 60, 1440)


def duckdb_sql(path: str, minutes: int) -> str:
    """The same features with the registry's minimum readings for this window size."""
    least = {f.name: f.threshold(minutes) for f in features_for("v1") if minutes in f.windows}

    def guarded(name: str, expression: str, count: str) -> str:
        return f"CASE WHEN {count} >= {least[name]} THEN {expression} END AS {name}"

    per_sensor = []
    for s in SENSOR_NAMES:
        per_sensor += [
            guarded(f"{s}_mean", f"avg({s})", f"count({s})"),
            guarded(f"{s}_std", f"stddev_samp({s})", f"count({s})"),
            guarded(f"{s}_min", f"min({s})", f"count({s})"),
            guarded(f"{s}_max", f"max({s})", f"count({s})"),
            guarded(f"{s}_p95", f"quantile_cont({s}, 0.95)", f"count({s})"),
            # regr_slope gives NaN, not NULL, for one reading
            guarded(f"{s}_slope", f"regr_slope({s}, minutes_offset)", f"count({s})"),
        ]
    pair = "least(count(pressure_high), count(pressure_low))"
    completeness = " + ".join(f"count({s})" for s in SENSOR_NAMES)
    return f"""
        WITH tagged AS (
            SELECT *, time_bucket(INTERVAL '{minutes} minutes', ts::TIMESTAMP) AS window_start,
                   epoch_us(ts::TIMESTAMP - time_bucket(INTERVAL '{minutes} minutes', ts::TIMESTAMP)) / 60e6 AS minutes_offset
            FROM read_parquet('{path}/*.parquet')
        )
        SELECT device_id, window_start, count(*) AS reading_count,
               ({completeness}) / (7.0 * count(*)) AS sensor_completeness,
               {guarded("compressor_duty_cycle", f"avg(CASE WHEN current_compressor > {COMPRESSOR_ON_AMPS} THEN 1.0 WHEN current_compressor IS NOT NULL THEN 0.0 END)", "count(current_compressor)")},
               {", ".join(per_sensor)},
               {guarded("pressure_ratio", "avg(pressure_high) / NULLIF(avg(pressure_low), 0)", pair)}
        FROM tagged GROUP BY device_id, window_start
    """


def run_duckdb(path: str, out: Path) -> float:
    import duckdb

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    started = time.perf_counter()
    for minutes in WINDOWS:
        con.execute(f"COPY ({duckdb_sql(path, minutes)}) TO '{out}/duck_{minutes}.parquet' (FORMAT parquet)")
    return time.perf_counter() - started


def run_spark(spark, path: str, out: Path, repeat: int) -> float:
    started = time.perf_counter()
    readings = spark.read.parquet(path)
    for minutes in WINDOWS:
        features = window_features(readings, minutes, "v1", datetime.now(UTC))
        features.write.format("delta").mode("overwrite").save(str(out / f"spark_{minutes}_{repeat}"))
    return time.perf_counter() - started


def agreement(spark, out: Path) -> float:
    """Largest relative difference between the engines over every comparable feature and window."""
    import duckdb
    import pandas as pd

    worst = 0.0
    names = [f.name for f in features_for("v1") if f.name != "spectral_entropy_vibration"]
    for minutes in WINDOWS:
        ours = spark.read.format("delta").load(str(out / f"spark_{minutes}_0")).toPandas()
        ref = duckdb.sql(f"SELECT * FROM '{out}/duck_{minutes}.parquet'").df()
        ours["window_start"] = pd.to_datetime(ours["window_start"]).dt.tz_localize(None)
        ref["window_start"] = pd.to_datetime(ref["window_start"]).dt.tz_localize(None)
        merged = ours.merge(ref, on=["device_id", "window_start"], suffixes=("", "_ref"))
        assert len(merged) == len(ours) == len(ref), (minutes, len(ours), len(ref), len(merged))
        for name in names:
            a, b = merged[name].astype(float).to_numpy(), merged[f"{name}_ref"].astype(float).to_numpy()
            assert (np.isnan(a) == np.isnan(b)).all(), f"NULLs differ for {name} ({minutes} min)"
            # relative where the reference is not ~0 (a slope of 1e-12 has no meaningful relative error)
            both = ~np.isnan(a) & (np.abs(b) > 1e-6)
            if both.any():
                rel = np.abs(a[both] - b[both]) / np.abs(b[both])
                worst = max(worst, float(rel.max()))
            tiny = ~np.isnan(a) & (np.abs(b) <= 1e-6)
            assert (np.abs(a[tiny] - b[tiny]) < 1e-9).all(), f"{name} ({minutes} min) differs near zero"
    return worst


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    from fs_resources.spark import get_spark_session

    t0 = time.perf_counter()
    spark = get_spark_session()
    spark.range(1).count()
    startup = time.perf_counter() - t0
    results = {"spark_startup_seconds": round(startup, 2), "day": DAY.isoformat(), "runs": []}
    print(f"Spark start-up: {startup:.1f} s (excluded below)")
    for devices in args.devices:
        work = Path(tempfile.mkdtemp(prefix=f"fs-bench-{devices}-"))
        try:
            generate(FleetSpec.clean(devices, DAY, 1, seed=1), str(work))
            path = str(work / "landing" / f"date={DAY.isoformat()}")
            rows = spark.read.parquet(path).count()
            out = work / "out"
            out.mkdir()
            spark_times, duck_times = [], []
            for repeat in range(args.repeats):
                duck_times.append(run_duckdb(path, out))
                spark_times.append(run_spark(spark, path, out, repeat))
            worst = agreement(spark, out)
            spark_s, duck_s = statistics.median(spark_times), statistics.median(duck_times)
            entry = {
                "devices": devices,
                "readings": rows,
                "repeats": args.repeats,
                "spark_seconds_median": round(spark_s, 2),
                "duckdb_seconds_median": round(duck_s, 2),
                "ratio_spark_to_duckdb": round(spark_s / duck_s, 2),
                "spark_readings_per_second": round(rows / spark_s),
                "duckdb_readings_per_second": round(rows / duck_s),
                "max_relative_difference": worst,
                "spark_seconds_all": [round(t, 2) for t in spark_times],
                "duckdb_seconds_all": [round(t, 2) for t in duck_times],
            }
            results["runs"].append(entry)
            print(
                f"{devices:>7} devices {rows:>11,} readings  spark {spark_s:7.1f} s  duckdb {duck_s:6.1f} s  ratio {spark_s / duck_s:5.2f}x  "
                f"{rows / spark_s:>10,.0f} readings/s  max rel diff {worst:.1e}"
            )
        finally:
            shutil.rmtree(work, ignore_errors=True)
    if len(results["runs"]) >= 2:
        a, b = results["runs"][0], results["runs"][-1]
        results["growth_seconds_per_device_ratio"] = round(
            (b["spark_seconds_median"] / b["devices"]) / (a["spark_seconds_median"] / a["devices"]), 2
        )
    write_results("features", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
