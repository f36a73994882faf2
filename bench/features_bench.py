"""Benchmark: one simulated day's features at all three window sizes, as the assets run, against DuckDB.

    FS_SPARK_DRIVER_MEMORY=12g .venv/bin/python bench/features_bench.py --devices 10000 --repeats 3

Setup, not timed: the simulator's day of a fleet without faults, cleaned into the Delta table by
`clean_sensor_readings` (a `dagster.materialize`, as the code location runs it).

Ours: `device_features_15m`, `_1h` and `_1d` materialized (`dagster.materialize`, a fresh instance
and table each time, so each computes its day whole): Delta in, every feature of the registry's
`v1` set, Delta out, the steps' own checks included. DuckDB (version pinned in `pyproject.toml`):
the same clean Parquet files the Delta log lists, the same columns with the registry's minimum
readings, and the spectral entropy of compressor vibration from a numpy FFT over each window's
readings in time order (written here, independent of the feature kernels), then each window size
written as a Delta table (`deltalake`). Runs alternate, DuckDB first. Every feature of every
window is compared between the two. Writes `bench/results/features.json`: medians and maxima.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.results import against_reference, write_results  # noqa: E402
from fs_domain.contract import SENSOR_NAMES  # noqa: E402
from fs_domain.features import COMPRESSOR_ON_AMPS, features_for  # noqa: E402
from fs_resources.simulator.fleet import FleetSpec, generate  # noqa: E402

DAY = date(2026, 1, 5)
WINDOWS = (15, 60, 1440)


def duckdb_sql(source: str, minutes: int) -> str:
    """The same features with the registry's minimum readings for this window size, from `source`
    (a DuckDB list of Parquet file paths)."""
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
            FROM read_parquet({source})
        )
        SELECT device_id, window_start, count(*) AS reading_count,
               ({completeness}) / (7.0 * count(*)) AS sensor_completeness,
               {guarded("compressor_duty_cycle", f"avg(CASE WHEN current_compressor > {COMPRESSOR_ON_AMPS} THEN 1.0 WHEN current_compressor IS NOT NULL THEN 0.0 END)", "count(current_compressor)")},
               {", ".join(per_sensor)},
               {guarded("pressure_ratio", "avg(pressure_high) / NULLIF(avg(pressure_low), 0)", pair)}
        FROM tagged GROUP BY device_id, window_start
    """


def spectral_entropy_reference(lists: list, least: int) -> np.ndarray:
    """Normalised Shannon entropy of each window's FFT power spectrum (mean removed, DC dropped),
    from its non-NULL readings in time order; NaN below `least` readings or for a flat signal."""
    out = np.full(len(lists), np.nan)
    lengths = np.array([len(v) for v in lists])
    for length in np.unique(lengths[lengths >= max(least, 2)]):
        rows = np.flatnonzero(lengths == length)
        x = np.array([lists[i] for i in rows], dtype=float)
        x -= x.mean(axis=1, keepdims=True)
        power = np.abs(np.fft.rfft(x, axis=1))[:, 1:] ** 2
        total = power.sum(axis=1)
        if power.shape[1] < 2:
            continue
        with np.errstate(divide="ignore", invalid="ignore"):
            p = power / total[:, None]
            h = -np.nansum(np.where(p > 0, p * np.log(p), 0.0), axis=1) / np.log(power.shape[1])
        out[rows] = np.where(total > 0, h, np.nan)
    return out


def run_duckdb_on_files(files: list[str], out: Path) -> float:
    """All three window sizes, spectral entropy included, each written as a Delta table."""
    import duckdb
    import pyarrow as pa
    from deltalake import write_deltalake

    spectral = next(f for f in features_for("v1") if f.name == "spectral_entropy_vibration")
    source = "[" + ", ".join(repr(f) for f in files) + "]"
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    started = time.perf_counter()
    for minutes in WINDOWS:
        table = con.execute(duckdb_sql(source, minutes)).to_arrow_table()
        if minutes in spectral.windows:
            lists = con.execute(
                f"""SELECT device_id, time_bucket(INTERVAL '{minutes} minutes', ts::TIMESTAMP) AS window_start,
                           list(vibration_compressor ORDER BY ts) FILTER (WHERE vibration_compressor IS NOT NULL) AS v
                    FROM read_parquet({source}) GROUP BY ALL"""
            ).to_arrow_table()
            entropy = spectral_entropy_reference([v or [] for v in lists.column("v").to_pylist()], spectral.threshold(minutes))
            keyed = {k: e for k, e in zip(zip(lists.column("device_id").to_pylist(), lists.column("window_start").to_pylist()), entropy)}
            keys = zip(table.column("device_id").to_pylist(), table.column("window_start").to_pylist())
            table = table.append_column("spectral_entropy_vibration", pa.array([keyed[k] for k in keys], type=pa.float64()))
        write_deltalake(str(out / f"duck_{minutes}"), table, mode="overwrite")
    return time.perf_counter() - started


def agreement(ours, out: Path) -> float:
    """Largest relative difference between the engines over every feature and window."""
    import pandas as pd
    from deltalake import DeltaTable

    worst = 0.0
    names = [f.name for f in features_for("v1")]
    for minutes in WINDOWS:
        mine = ours.where(f"window_duration_minutes = {minutes}").toPandas()
        ref = DeltaTable(str(out / f"duck_{minutes}")).to_pandas()
        mine["window_start"] = pd.to_datetime(mine["window_start"]).dt.tz_localize(None)
        ref["window_start"] = pd.to_datetime(ref["window_start"]).dt.tz_localize(None)
        merged = mine.merge(ref, on=["device_id", "window_start"], suffixes=("", "_ref"))
        assert len(merged) == len(mine) == len(ref), (minutes, len(mine), len(ref), len(merged))
        for name in names:
            if f"{name}_ref" not in merged:
                continue  # a feature without a window of this size (NULL on our side)
            a, b = merged[name].astype(float).to_numpy(), merged[f"{name}_ref"].astype(float).to_numpy()
            assert (np.isnan(a) == np.isnan(b)).all(), f"NULLs differ for {name} ({minutes} min)"
            # relative where the reference is not ~0 (a slope of 1e-12 has no meaningful relative error)
            both = ~np.isnan(a) & (np.abs(b) > 1e-6)
            if both.any():
                worst = max(worst, float((np.abs(a[both] - b[both]) / np.abs(b[both])).max()))
            tiny = ~np.isnan(a) & (np.abs(b) <= 1e-6)
            assert (np.abs(a[tiny] - b[tiny]) < 1e-9).all(), f"{name} ({minutes} min) differs near zero"
    return worst


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    import dagster as dg
    import duckdb
    from deltalake import DeltaTable

    from bench.cluster_day import PeakMemory

    with tempfile.TemporaryDirectory(prefix=f"fs-bench-{args.devices}-") as tmp:
        root = Path(tmp) / "data"
        os.environ["FS_DATA_ROOT"] = str(root)
        from definitions import defs
        from fs_assets.features.assets import feature_assets
        from fs_assets.ingest.assets import clean_sensor_readings, device_registry
        from fs_domain.tables import CLEAN_TABLE, features_table

        generate(FleetSpec.clean(args.devices, DAY, 1, seed=1), str(root))
        resources = {k: v for k, v in defs.resources.items() if k in ("spark", "delta", "feature_store")}
        spark = resources["spark"].spark_session
        delta = resources["delta"]
        with dg.instance_for_test() as instance:
            for assets, key in (([device_registry], None), ([clean_sensor_readings], DAY.isoformat())):
                assert dg.materialize(assets, resources=resources, instance=instance, partition_key=key).success
        clean = DeltaTable(delta.path(CLEAN_TABLE))
        files = [f for f in clean.file_uris() if f"reading_date={DAY.isoformat()}" in f]
        readings = spark.read.format("delta").load(delta.path(CLEAN_TABLE)).count()
        out = Path(tmp) / "duckdb"
        ours_s, theirs_s, ours_peak, theirs_peak = [], [], [], []
        for repeat in range(args.repeats):
            shutil.rmtree(out, ignore_errors=True)
            with PeakMemory() as memory:
                theirs_s.append(run_duckdb_on_files(files, out))
            theirs_peak.append(memory.peak / 1024)
            shutil.rmtree(delta.path(features_table()), ignore_errors=True)
            with dg.instance_for_test() as instance, PeakMemory() as memory:
                started = time.perf_counter()
                result = dg.materialize(feature_assets, resources=resources, instance=instance, partition_key=DAY.isoformat())
                ours_s.append(time.perf_counter() - started)
            ours_peak.append(memory.peak / 1024)
            assert result.success
            print(f"run {repeat + 1}: ours {ours_s[-1]:.1f} s, duckdb {theirs_s[-1]:.1f} s", flush=True)
        worst = agreement(spark.read.format("delta").load(delta.path(features_table())), out)
    results = {
        "devices": args.devices,
        "readings": readings,
        "day": DAY.isoformat(),
        "repeats": args.repeats,
        **against_reference(ours_s, theirs_s, ours_peak, theirs_peak),
        "max_relative_difference": worst,
        "duckdb_version": duckdb.__version__,
        "spark_driver_memory": spark.sparkContext.getConf().get("spark.driver.memory"),
        "note": "ours: the three feature assets materialized (Delta in and out, their in-step checks); duckdb: the same "
        "columns from the same clean files, spectral entropy by numpy FFT, Delta out (deltalake). Peak memory includes the "
        "idle Spark JVM on both.",
    }
    print(
        f"{args.devices:,} devices, {readings:,} readings: ours {results['ours_seconds_median']} s, "
        f"duckdb {results['duckdb_seconds_median']} s, ratio {results['ratio_ours_to_duckdb']}x, max rel diff {worst:.1e}"
    )
    write_results("features", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
