"""Benchmark: point-in-time training-set lookups, `OfflineStore` against a DuckDB ASOF join.

    .venv/bin/python bench/offline_bench.py --devices 1000 --days 16 --entities 100000 1000000 --repeats 3

A `device_features` Delta table of `devices x days x 96` 15-minute windows (1.5 million rows by
default) is written once; entity rows are random devices (5 % unknown) at random times (one in
ten exactly on a window end). Both sides answer: the latest 15-minute window with
`event_time - 1 h <= window_end <= event_time`, ten features, every entity row once, in order.
DuckDB reads the same Parquet files of the same Delta version and returns a pandas frame, as ours
does. The results are compared row for row. Prints a table and writes `bench/results/offline.json`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.results import write_results  # noqa: E402
from fs_domain.features import features_for  # noqa: E402
from fs_resources.offline import OfflineStore  # noqa: E402
from fs_resources.schemas import features_spark_schema  # noqa: E402

START = datetime(2026, 1, 1, tzinfo=UTC)
MINUTES = 15
TOLERANCE = timedelta(hours=1)
FEATURES = [
    "temp_evaporator_mean",
    "temp_evaporator_std",
    "temp_condenser_mean",
    "pressure_high_mean",
    "pressure_low_mean",
    "current_compressor_mean",
    "current_compressor_p95",
    "vibration_compressor_max",
    "compressor_duty_cycle",
    "reading_count",
]


def write_features(spark, root: str, devices: int, days: int) -> int:
    from pyspark.sql import functions as F

    per_day = 1440 // MINUTES
    windows = spark.range(devices * days * per_day).select(
        F.format_string("dev-%05d", (F.col("id") % devices).cast("int")).alias("device_id"),
        F.timestamp_micros(F.lit(int(START.timestamp() * 1e6)) + (F.col("id") / devices).cast("long") * MINUTES * 60_000_000).alias(
            "window_start"
        ),
    )
    columns = {}
    for i, f in enumerate(features_for("v1")):
        columns[f.name] = (
            (F.lit(MINUTES) - (F.rand(i) * 3).cast("long"))
            if f.dtype == "long"
            else F.when(F.rand(100 + i) < 0.02, None).otherwise(F.rand(200 + i) * 50 - 25)
        )
    frame = windows.select(
        "*",
        F.timestamp_micros(F.unix_micros("window_start") + MINUTES * 60_000_000).alias("window_end"),
        *[c.alias(n) for n, c in columns.items()],
        F.lit(MINUTES).alias("window_duration_minutes"),
        F.to_date("window_start").alias("window_date"),
        F.current_timestamp().alias("computed_at"),
        F.lit("v1").alias("feature_set_version"),
    )
    schema = features_spark_schema("v1")
    frame = frame.select(*[F.col(f.name).cast(f.dataType) for f in schema.fields])
    frame.write.format("delta").mode("overwrite").partitionBy("window_date", "window_duration_minutes").save(f"{root}/device_features/v1")
    return devices * days * per_day


def entities(n: int, devices: int, days: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, int(devices * 1.05), n)
    offsets = rng.integers(0, days * 86400 * 10**6, n)
    on_boundary = rng.random(n) < 0.1
    offsets = np.where(on_boundary, offsets // (MINUTES * 60 * 10**6) * (MINUTES * 60 * 10**6), offsets)
    return pd.DataFrame(
        {
            "device_id": np.char.add("dev-", np.char.zfill(ids.astype(str), 5)).astype(object),
            "event_time": pd.to_datetime(START) + pd.to_timedelta(offsets, unit="us"),
        }
    )


def duckdb_join(con, files: list[str], frame: pd.DataFrame) -> pd.DataFrame:
    feature_list = ", ".join(
        f"CASE WHEN f.window_end >= e.event_time - INTERVAL '{int(TOLERANCE.total_seconds())} seconds' THEN f.{c} END AS {c}"
        for c in FEATURES
    )
    con.register("entities", frame.assign(_row=np.arange(len(frame))))
    return con.execute(
        f"""
        SELECT e.device_id, e.event_time, {feature_list},
               CASE WHEN f.window_end >= e.event_time - INTERVAL '{int(TOLERANCE.total_seconds())} seconds' THEN f.window_end END AS feature_window_end
        FROM entities e
        ASOF LEFT JOIN (SELECT device_id, window_end, {", ".join(FEATURES)} FROM read_parquet($files) WHERE window_duration_minutes = {MINUTES}) f
          ON e.device_id = f.device_id AND e.event_time >= f.window_end
        ORDER BY e._row
        """,
        {"files": files},
    ).df()


def differing_rows(ours: pd.DataFrame, reference: pd.DataFrame) -> int:
    bad = np.zeros(len(ours), bool)
    for c in [*FEATURES, "feature_window_end"]:
        a, b = ours[c], reference[c]
        if c == "feature_window_end":
            a, b = pd.to_datetime(a, utc=True), pd.to_datetime(b, utc=True)
        same = (a.isna().to_numpy() & b.isna().to_numpy()) | (a.to_numpy() == b.to_numpy())
        bad |= ~np.asarray(same, bool)
    return int(bad.sum())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--days", type=int, default=16)
    parser.add_argument("--entities", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    import duckdb
    from deltalake import DeltaTable

    from fs_resources.spark import delta_spark_conf, get_spark_session

    results: dict = {"runs": [], "repeats": args.repeats, "window_minutes": MINUTES, "features": FEATURES}
    with tempfile.TemporaryDirectory() as tmp:
        spark = get_spark_session(delta_spark_conf(master="local[2]", shuffle_partitions=4))
        started = time.perf_counter()
        rows = write_features(spark, tmp, args.devices, args.days)
        print(f"feature table: {rows:,} rows written in {time.perf_counter() - started:.0f} s", flush=True)
        results["feature_rows"] = rows
        spark.stop()
        store = OfflineStore(tables_root=tmp)
        files = DeltaTable(f"{tmp}/device_features/v1").file_uris()
        con = duckdb.connect()
        for n in args.entities:
            frame = entities(n, args.devices, args.days, seed=n)
            ours, theirs = [], []
            for _ in range(args.repeats):
                t = time.perf_counter()
                result = store.get_historical_features(frame, FEATURES, MINUTES, tolerance=TOLERANCE)
                ours.append(time.perf_counter() - t)
                t = time.perf_counter()
                reference = duckdb_join(con, files, frame)
                theirs.append(time.perf_counter() - t)
            assert len(result) == n and list(result["device_id"]) == list(frame["device_id"])
            differing = differing_rows(result, reference)
            row = {
                "entity_rows": n,
                "ours_seconds": statistics.median(ours),
                "duckdb_seconds": statistics.median(theirs),
                "ours_rows_per_second": n / statistics.median(ours),
                "rows_matched": int(result["feature_window_end"].notna().sum()),
                "rows_differing": differing,
            }
            row["ratio"] = row["ours_seconds"] / row["duckdb_seconds"]
            results["runs"].append(row)
            print(
                f"{n:>9,} entity rows: ours {row['ours_seconds']:.2f} s ({row['ours_rows_per_second']:,.0f} rows/s), "
                f"DuckDB {row['duckdb_seconds']:.2f} s, ratio {row['ratio']:.2f}x, {row['rows_matched']:,} matched, {differing} rows differ",
                flush=True,
            )
    write_results("offline", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
