"""Benchmark: the online store against bare redis-py, on a real redis-server of its own.

    .venv/bin/python bench/online_bench.py --devices 10000 100000 --repeats 3 --calls 2000

- Pre-hydration, end to end from the `device_objects` Delta table (Spark read, Arrow, encoding,
  the guarded Lua upsert with TTL, the sweep of unknown entries) against a bare redis-py pipelined
  `HSET` of the same payload already in memory.
- Online reads of 1 and of 100 devices through `OnlineStore.get_online_features` (typed values)
  against bare `HGETALL` (pipelined for 100; raw bytes back), p50 and p99 over `--calls` calls
  after a warm-up.

Prints a table and writes `bench/results/online.json`: medians of `--repeats` runs.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from datetime import UTC, date, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402

from bench.results import write_results  # noqa: E402
from fs_assets.ontology.objects import objects_arrow  # noqa: E402
from fs_resources.embedded_redis import EmbeddedRedis  # noqa: E402
from fs_resources.online import OnlineStore  # noqa: E402
from fs_resources.schemas import device_spark_schema  # noqa: E402


def write_objects(spark, path: str, devices: int) -> None:
    """A synthetic `device_objects` table: every device served, every property set."""
    from pyspark.sql import functions as F

    hydrated = datetime(2026, 1, 8, 0, 30, tzinfo=UTC)
    frame = spark.range(devices).select(
        F.format_string("dev-%07d", "id").alias("device_id"),
        F.format_string("site-%03d", F.col("id") % 200).alias("site_id"),
        F.element_at(F.array(F.lit("RF-200"), F.lit("RF-300"), F.lit("RF-500")), (F.col("id") % 3 + 1).cast("int")).alias("model"),
        F.element_at(F.array(F.lit("R-134a"), F.lit("R-404A"), F.lit("R-290")), (F.col("id") % 3 + 1).cast("int")).alias("refrigerant"),
        F.date_add(F.lit(date(2020, 1, 1)), (F.col("id") % 1500).cast("int")).alias("install_date"),
        F.when(F.col("id") % 20 == 0, "maintenance").otherwise("active").alias("status"),
        (F.rand(1) * 10 - 25).alias("avg_temperature_evaporator_24h"),
        (F.rand(2) * 4 + 6).alias("avg_compressor_current_24h"),
        (1380 + (F.col("id") % 61)).cast("long").alias("reading_count_24h"),
        F.rand(3).alias("latest_anomaly_score"),
        F.lit(datetime(2026, 1, 8, tzinfo=UTC)).cast("timestamp").alias("features_window_end"),
        F.lit(hydrated).cast("timestamp").alias("hydrated_at"),
    )
    spark.createDataFrame(frame.rdd, device_spark_schema()).write.format("delta").mode("overwrite").save(path)


def prehydrate_ours(spark, path: str, store: OnlineStore) -> tuple[float, float]:
    """Seconds end to end, and of those the Delta read into Arrow."""
    started = time.perf_counter()
    objects = objects_arrow(spark.read.format("delta").load(path))
    read = time.perf_counter() - started
    report = store.project(objects, objects.column("hydrated_at")[0].as_py())
    assert report.written == objects.num_rows, report
    return time.perf_counter() - started, read


def bare_payload(store: OnlineStore, columns: dict[str, list]) -> list[tuple[str, dict]]:
    served, rows, _ = store.encode_objects(columns)
    names = store._all_fields
    return [(store.prefix + d, {n: v for n, v in zip(names, row) if v is not None}) for d, row in zip(served, rows)]


def prehydrate_bare(client: redis.Redis, payload: list[tuple[str, dict]], chunk: int = 4000) -> float:
    started = time.perf_counter()
    for start in range(0, len(payload), chunk):
        pipe = client.pipeline(transaction=False)
        for key, mapping in payload[start : start + chunk]:
            pipe.hset(key, mapping=mapping)
        pipe.execute()
    return time.perf_counter() - started


def latencies(fn, arguments: list, warmup: int) -> tuple[float, float]:
    for a in arguments[:warmup]:
        fn(a)
    samples = []
    for a in arguments[warmup:]:
        started = time.perf_counter_ns()
        fn(a)
        samples.append(time.perf_counter_ns() - started)
    samples.sort()
    return samples[len(samples) // 2] / 1000, samples[int(len(samples) * 0.99)] / 1000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--calls", type=int, default=2000, help="timed read calls per run (after 200 warm-up calls)")
    args = parser.parse_args(argv)

    from fs_resources.spark import delta_spark_conf, get_spark_session

    spark = get_spark_session(delta_spark_conf(master="local[2]", shuffle_partitions=2))
    results: dict = {"prehydration": [], "reads": [], "repeats": args.repeats, "calls": args.calls}
    with tempfile.TemporaryDirectory() as tmp:
        server = EmbeddedRedis(Path(tmp) / "redis")
        url = server.start()
        try:
            client = redis.Redis.from_url(url)
            store = OnlineStore(client, "v1")
            for devices in args.devices:
                path = f"{tmp}/device_objects_{devices}"
                write_objects(spark, path, devices)
                payload = bare_payload(store, objects_arrow(spark.read.format("delta").load(path)))
                ours, reads, bare = [], [], []
                for _ in range(args.repeats):
                    client.flushdb()
                    total, read = prehydrate_ours(spark, path, store)
                    ours.append(total)
                    reads.append(read)
                    client.flushdb()
                    bare.append(prehydrate_bare(client, payload))
                row = {
                    "devices": devices,
                    "ours_seconds": statistics.median(ours),
                    "ours_delta_read_seconds": statistics.median(reads),
                    "bare_hset_seconds": statistics.median(bare),
                }
                row["ratio"] = row["ours_seconds"] / row["bare_hset_seconds"]
                results["prehydration"].append(row)
                print(
                    f"pre-hydration {devices:>7,} devices: ours {row['ours_seconds']:.2f} s (Delta to Redis; the Delta read {row['ours_delta_read_seconds']:.2f} s), bare HSET {row['bare_hset_seconds']:.2f} s, ratio {row['ratio']:.2f}x",
                    flush=True,
                )

            # Reads against the last (largest) projection.
            client.flushdb()
            prehydrate_ours(spark, path, store)
            ids = [k.decode()[len(store.prefix) :] for k in client.scan_iter(match=store.prefix + "*", count=5000)]
            rng = random.Random(7)
            warmup = 200

            def bare_one(device_id):
                return client.hgetall(store.prefix + device_id)

            def bare_many(device_ids):
                pipe = client.pipeline(transaction=False)
                for d in device_ids:
                    pipe.hgetall(store.prefix + d)
                return pipe.execute()

            for batch in (1, 100):
                runs = {"ours_p50": [], "ours_p99": [], "bare_p50": [], "bare_p99": []}
                for _ in range(args.repeats):
                    calls = [[rng.choice(ids) for _ in range(batch)] for _ in range(args.calls + warmup)]
                    if batch == 1:
                        bare_p50, bare_p99 = latencies(lambda c: bare_one(c[0]), calls, warmup)
                    else:
                        bare_p50, bare_p99 = latencies(bare_many, calls, warmup)
                    ours_p50, ours_p99 = latencies(store.get_online_features, calls, warmup)
                    for name, value in (("ours_p50", ours_p50), ("ours_p99", ours_p99), ("bare_p50", bare_p50), ("bare_p99", bare_p99)):
                        runs[name].append(value)
                row = {"devices_per_call": batch} | {f"{k}_us": round(statistics.median(v), 1) for k, v in runs.items()}
                row["p50_ratio"] = round(row["ours_p50_us"] / row["bare_p50_us"], 3)
                results["reads"].append(row)
                print(
                    f"reads of {batch:>3} device(s): ours p50 {row['ours_p50_us']:.0f} µs p99 {row['ours_p99_us']:.0f} µs, "
                    f"bare HGETALL p50 {row['bare_p50_us']:.0f} µs p99 {row['bare_p99_us']:.0f} µs, p50 ratio {row['p50_ratio']:.2f}x",
                    flush=True,
                )
        finally:
            server.stop()
    write_results("online", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
