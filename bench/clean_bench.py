"""Benchmark: one simulated day of landing files cleaned by the asset (ours) against DuckDB.

    .venv/bin/python bench/clean_bench.py --devices 10000 --repeats 3

Both sides do the same work on the same files: read the day's Parquet landing files, validate ids
(the contract's pattern), timestamps (future, outside the day) and the registry, turn out-of-range
and non-finite values into NULL with flags, deduplicate on (device_id, ts) with the latest
ingested file winning, and write clean rows and quarantine rows as Delta tables partitioned by
day. Ours is `clean_sensor_readings` materialized as the UI does (a rebuild of the day, Delta in
and out, the ledger and the accounting included); DuckDB (version pinned in pyproject) writes its
Arrow results with `deltalake`. Runs alternate (ours, DuckDB, ours, ...). Prints a table and writes
`bench/results/clean.json`: median and slowest of `--repeats` runs, row counts that must agree,
and peak memory (this process plus every JVM, sampled at most every half second).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, date, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.cluster_day import PeakMemory  # noqa: E402
from bench.results import against_reference, write_results  # noqa: E402
from fs_domain.contract import DEVICE_ID_REGEX, FUTURE_TOLERANCE, SENSORS  # noqa: E402

DAY = date(2026, 1, 5)


def duckdb_clean(landing: Path, registry_csv: str, out: Path) -> tuple[int, int]:
    import duckdb
    from deltalake import write_deltalake

    files = sorted(landing.glob("*.parquet"))
    mtimes = ", ".join(f"('{f}', to_timestamp({f.stat().st_mtime}))" for f in files)
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S")
    value = []
    flags = []
    for s in SENSORS:
        bad = f"(isnan({s.name}) OR isinf({s.name}) OR {s.name} < {s.low} OR {s.name} > {s.high})"
        value.append(f"CASE WHEN {bad} THEN NULL ELSE {s.name} END AS {s.name}")
        flags.append(
            f"CASE WHEN isnan({s.name}) OR isinf({s.name}) THEN '{s.name}:non_finite' "
            f"WHEN {s.name} < {s.low} OR {s.name} > {s.high} THEN '{s.name}:out_of_range' END"
        )
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'; SET threads = 2")
    con.execute(f"""
        CREATE TEMP TABLE classified AS
        WITH raw AS (
            SELECT * FROM read_parquet({[str(f) for f in files]}, filename = true, file_row_number = true)
        ), landed(filename, ingested_at) AS (VALUES {mtimes}),
        registry AS (SELECT DISTINCT device_id FROM read_csv('{registry_csv}', all_varchar = true))
        SELECT r.*, l.ingested_at,
            CASE WHEN r.device_id IS NULL OR NOT regexp_full_match(r.device_id, '{DEVICE_ID_REGEX}') THEN 'malformed_device_id'
                 WHEN r.ts IS NULL THEN 'unparseable_timestamp'
                 WHEN r.ts > TIMESTAMPTZ '{now}' + INTERVAL '{int(FUTURE_TOLERANCE.total_seconds())} seconds' THEN 'future_timestamp'
                 WHEN r.ts::DATE <> DATE '{DAY}' THEN 'outside_partition'
                 WHEN g.device_id IS NULL THEN 'unknown_device' END AS reason
        FROM raw r JOIN landed l USING (filename) LEFT JOIN registry g USING (device_id)
    """)
    clean = con.execute(f"""
        SELECT device_id, ts, {", ".join(value)},
               list_filter([{", ".join(flags)}], lambda x: x IS NOT NULL) AS quality_flags,
               filename AS source_file, ingested_at, ts::DATE AS reading_date
        FROM classified WHERE reason IS NULL
        QUALIFY row_number() OVER (PARTITION BY device_id, ts ORDER BY ingested_at DESC, filename DESC, file_row_number DESC) = 1
    """).to_arrow_table()
    quarantine = con.execute(f"""
        SELECT DATE '{DAY}' AS landing_date, filename AS source_file, file_row_number AS source_row, reason,
               to_json(struct_pack(device_id, ts)) AS raw_payload, ingested_at, now() AS quarantined_at
        FROM classified WHERE reason IS NOT NULL
    """).to_arrow_table()
    write_deltalake(str(out / "clean"), clean, partition_by=["reading_date"], mode="overwrite")
    write_deltalake(str(out / "quarantine"), quarantine, partition_by=["landing_date"], mode="overwrite")
    return clean.num_rows, quarantine.num_rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    import dagster as dg
    import duckdb

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        os.environ["FS_DATA_ROOT"] = str(root)
        from definitions import defs
        from fs_assets.ingest.assets import clean_sensor_readings, device_registry
        from fs_domain.tables import CLEAN_TABLE, LEDGER_TABLE, QUARANTINE_TABLE
        from fs_resources import settings
        from fs_resources.simulator.fleet import FleetSpec, generate

        spec = FleetSpec(devices=args.devices, start=DAY, days=1, seed=3, duplicate_rate=0.01, conflict_rate=0.002, foreign_rows_per_day=50)
        generate(spec, str(root))
        landing = Path(settings.landing_root(str(root))) / f"date={DAY}"
        raw_rows = duckdb.sql(f"SELECT count(*) FROM read_parquet('{landing}/*.parquet')").fetchall()[0][0]
        files = len(list(landing.glob("*.parquet")))
        resources = {k: v for k, v in defs.resources.items() if k in ("spark", "delta")}
        config = {"ops": {"clean_sensor_readings": {"config": {"rebuild": True}}}}
        session = resources["spark"].spark_session  # started with the resource's own settings (FS_SPARK_DRIVER_MEMORY)
        driver_memory = session.sparkContext.getConf().get("spark.driver.memory")
        ours, theirs, ours_peak, theirs_peak = [], [], [], []
        counts, steps = {}, []
        with dg.instance_for_test() as instance:
            assert dg.materialize([device_registry], resources=resources, instance=instance).success
            for repeat in range(args.repeats):
                for table in (CLEAN_TABLE, QUARANTINE_TABLE, LEDGER_TABLE):
                    shutil.rmtree(root / "delta" / table, ignore_errors=True)
                with PeakMemory() as memory:
                    started = time.perf_counter()
                    result = dg.materialize(
                        [clean_sensor_readings], partition_key=DAY.isoformat(), resources=resources, instance=instance, run_config=config
                    )
                    ours.append(time.perf_counter() - started)
                ours_peak.append(memory.peak / 1024)
                (event,) = result.get_asset_materialization_events()
                md = event.materialization.metadata
                counts["ours"] = (md["clean_rows_added"].value, md["quarantined_rows"].value)
                steps.append(md["step_seconds"].value)
                out = Path(tmp) / f"duckdb-{repeat}"
                with PeakMemory() as memory:
                    started = time.perf_counter()
                    counts["duckdb"] = duckdb_clean(landing, settings.registry_csv_path(str(root)), out)
                    theirs.append(time.perf_counter() - started)
                theirs_peak.append(memory.peak / 1024)
                shutil.rmtree(out, ignore_errors=True)
                print(f"run {repeat + 1}: ours {ours[-1]:.1f} s, duckdb {theirs[-1]:.1f} s", flush=True)
    median_ours, median_theirs = statistics.median(ours), statistics.median(theirs)
    results = {
        "devices": args.devices,
        "raw_rows": raw_rows,
        "files": files,
        "repeats": args.repeats,
        **against_reference(ours, theirs, ours_peak, theirs_peak),
        # Where each of our runs spent its time, step by step (the asset's own `step_seconds`).
        "ours_step_seconds_all": steps,
        "rows_agree": counts["ours"] == tuple(counts["duckdb"]),
        "clean_and_quarantined_rows": {k: list(v) for k, v in counts.items()},
        "duckdb_version": duckdb.__version__,
        "spark_driver_memory": driver_memory,
        "note": "ours: clean_sensor_readings materialized (rebuild), Delta in and out, ledger and checks in the step; "
        "duckdb: same contract on the same files, 2 threads, written with deltalake. Peak memory includes the idle Spark JVM on both.",
    }
    print(
        f"{args.devices:,} devices, {raw_rows:,} rows: ours {median_ours:.1f} s, duckdb {median_theirs:.1f} s, ratio {results['ratio_ours_to_duckdb']}"
    )
    write_results("clean", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
