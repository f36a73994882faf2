"""Benchmark: the online store (`OnlineStore`) against bare redis-py doing the same work, on a
redis-server of its own (no persistence, so no AOF rewrite lands in one side's timing).

    .venv/bin/python bench/online_bench.py                      # the full run (12 to 14 minutes on 2 busy cores)
    .venv/bin/python bench/online_bench.py --quick              # a smoke run for iterating

What is compared, and why it is the same work:

- Pre-hydration, end to end from an in-memory Arrow table of `Device` objects (10,000 and 100,000
  devices), into an EMPTY store and OVERWRITING a live one. Ours: `OnlineStore.project` (encoding,
  the guarded Lua upsert with TTL, the sweep of unknown entries, the projection state). Reference:
  the same table encoded by the same `encode_objects` (the stored text is the format's contract,
  so both write byte-identical values), then a redis-py pipeline of DEL + HSET (the non-NULL
  fields) + PEXPIRE (the same TTL) per device, as many devices per round trip as ours sends. Both
  leave the same hashes with the same TTL (checked). Separately, ours end to end from a
  `device_objects` Delta table (the Spark read into Arrow included), without a reference.
- Reads of 1 and 100 random devices: `get_online_features` (typed values) against redis-py
  `HMGET` of the same 12 fields of the same keys (pipelined for 100) on a `decode_responses=True`
  client, typed the same way (float, int, `date`, aware `datetime`; None for a device without an
  entry); results are checked equal. The same for a model's input vectors
  (`get_online_features(ids, model=MODEL)` after projecting them with `project(..., model=MODEL)`).
  A raw row (ours' read script without the typing against the pipelined HMGET without typing)
  splits transport from typing.
- Throughput of 1, 8 and 32 concurrent readers of 100 random devices per call, each reader with
  its own `OnlineStore` or its own redis-py client: idle, and while a pre-hydration of 100,000
  devices (ours for ours, the reference writer for the reference) overwrites the live store.
  Readers are processes, so that none shares a GIL with the pre-hydration (this process). Threads
  of this process are measured too, idle: their GIL confines the readers to one core, which on a
  machine of few cores leaves redis-server the others, so processes are not simply "more". A
  phase during a pre-hydration is timed while the write runs, for at most `--during-seconds` (many
  readers starve the writer of CPU; it then completes alone). Reads that found no entry during a
  pre-hydration are counted.
- The server's mean time per write command of a pre-hydration (a whole upsert script for ours, an
  HSET for the reference): a read waits behind the one running. Ours is also measured with the
  larger scripts it used to send (`LARGE_BATCHES`), there and for 1 reader during a pre-hydration.

Every timed pair is interleaved (ours, reference, reference, ours, ...: which goes first alternates)
after a warm-up; concurrent phases alternate ours and the reference likewise. Figures are p50 and
p99 per run, medians over `--repeats` runs; a ratio is ours / reference for times (for throughput,
reference / ours): above 1 ours is slower. The targets (every ratio at most 1.3x, p99 of one
reader's 100-device read during a pre-hydration under 10 ms) are printed, not asserted. Prints a table and
writes `bench/results/online.json`.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import queue
import random
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import redis  # noqa: E402

from bench.results import write_results  # noqa: E402
from fs_domain.models import models_for, vector_columns  # noqa: E402
from fs_resources.embedded_redis import EmbeddedRedis  # noqa: E402
from fs_resources.online import ARROW_TYPES, DEFAULT_TTL_SECONDS, OnlineStore, arrow_objects  # noqa: E402

MODEL = "compressor_failure_1h"
HYDRATED_AT = datetime(2026, 1, 8, 0, 30, tzinfo=UTC)
WINDOW_END = datetime(2026, 1, 8, tzinfo=UTC)
MAX_RATIO = 1.3
MAX_P99_DURING_MS = 10.0
READ_BATCH = 100
# Devices per round trip of the reference writer: what `project` sends by default (80 scripts of 50).
WRITE_CHUNK = 4000
TTL_MS = DEFAULT_TTL_SECONDS * 1000
# `project` with the larger scripts it used to send, as many devices per round trip: measured beside
# the default for the time the server spends in one script (what a concurrent read can wait behind).
LARGE_BATCHES = {"batch_size": 500, "batches_per_round_trip": WRITE_CHUNK // 500}
# Stdlib typing of the reference reader, the same values `get_online_features` returns.
PLAIN_DECODERS: dict[str, Callable[[str], object]] = {
    "double": float,
    "long": int,
    "date": date.fromisoformat,
    "timestamp": datetime.fromisoformat,
}


# --- data ------------------------------------------------------------------------------------


def device_ids(devices: int) -> list[str]:
    return [f"dev-{i:07d}" for i in range(devices)]


def _doubles(rng: np.random.Generator, devices: int, low: float, high: float, null_share: float = 0.0) -> list[float | None]:
    values = (rng.random(devices) * (high - low) + low).tolist()
    return [None if r < null_share else v for v, r in zip(values, rng.random(devices).tolist())]


def device_table(devices: int) -> pa.Table:
    """`Device` objects: every device served (1 in 20 in maintenance), 2 % without an anomaly score."""
    rng = np.random.default_rng(1)
    index = range(devices)
    return arrow_objects(
        {
            "device_id": device_ids(devices),
            "site_id": [f"site-{i % 200:03d}" for i in index],
            "model": [("RF-200", "RF-300", "RF-500")[i % 3] for i in index],
            "refrigerant": [("R-134a", "R-404A", "R-290")[i % 3] for i in index],
            "install_date": [date(2020, 1, 1) + timedelta(days=i % 1500) for i in index],
            "status": ["maintenance" if i % 20 == 0 else "active" for i in index],
            "avg_temperature_evaporator_24h": _doubles(rng, devices, -25, -15),
            "avg_compressor_current_24h": _doubles(rng, devices, 6, 10),
            "reading_count_24h": [1380 + i % 61 for i in index],
            "latest_anomaly_score": _doubles(rng, devices, 0, 1, null_share=0.02),
            "anomaly_top_features": ["current_compressor_mean, pressure_high_mean, vibration_compressor_p95"] * devices,
            "anomaly_top_pair": ["current_compressor_mean×pressure_high_mean"] * devices,
            "anomaly_reference": ["fleet" if i % 50 == 0 else "device" for i in index],
            "features_window_end": [WINDOW_END] * devices,
            "hydrated_at": [HYDRATED_AT] * devices,
        }
    )


def vector_table(devices: int) -> pa.Table:
    """`device_id` and the model's vector columns: its features (2 % NULL), its window, `hydrated_at`."""
    rng = np.random.default_rng(2)
    times = {"window_start": WINDOW_END - timedelta(hours=1), "window_end": WINDOW_END, "hydrated_at": HYDRATED_AT}
    columns = {"device_id": pa.array(device_ids(devices), pa.string())}
    for name, dtype in vector_columns(models_for("v1")[MODEL]):
        values = [times[name]] * devices if name in times else _doubles(rng, devices, -50, 50, null_share=0.02)
        columns[name] = pa.array(values, ARROW_TYPES[dtype])
    return pa.table(columns)


# --- the two sides -----------------------------------------------------------------------------


def reference_project(client: redis.Redis, store: OnlineStore, table: pa.Table, model: str | None = None) -> int:
    """The same writes with bare redis-py: per device DEL, HSET of its non-NULL encoded fields,
    PEXPIRE; a retired device DEL. Pipelined, `WRITE_CHUNK` devices per round trip."""
    layout = store.layout(model)
    served, rows, retired = store.encode_objects(table, model)
    names = layout.fields
    for start in range(0, len(served), WRITE_CHUNK):
        pipe = client.pipeline(transaction=False)
        for device, row in zip(served[start : start + WRITE_CHUNK], rows[start : start + WRITE_CHUNK]):
            key = layout.prefix + device
            pipe.delete(key)
            pipe.hset(key, mapping={n: v for n, v in zip(names, row) if v is not None})
            pipe.pexpire(key, TTL_MS)
        pipe.execute()
    if retired:
        client.delete(*(layout.prefix + d for d in retired))
    return len(served)


def ours_project(store: OnlineStore, table: pa.Table, model: str | None = None, **options) -> int:
    report = store.project(table, HYDRATED_AT, model=model, **options)
    assert report.written == table.num_rows and not report.superseded, report
    return report.written


class ReferenceReader:
    """Bare redis-py reads of the same fields of the same keys, typed like `get_online_features`."""

    def __init__(self, url: str, store: OnlineStore, model: str | None = None):
        self.client = redis.Redis.from_url(url, decode_responses=True)
        layout = store.layout(model)
        self.prefix, self.fields = layout.prefix, list(layout.fields)
        self.live = self.fields.index("hydrated_at")
        self.typed = [(f, PLAIN_DECODERS[layout.dtypes[f]]) for f in self.fields if layout.dtypes[f] != "string"]

    def raw(self, ids: list[str]) -> list[list[str | None]]:
        if len(ids) == 1:
            return [self.client.hmget(self.prefix + ids[0], self.fields)]
        pipe = self.client.pipeline(transaction=False)
        for device in ids:
            pipe.hmget(self.prefix + device, self.fields)
        return pipe.execute()

    def __call__(self, ids: list[str]) -> list[dict | None]:
        out: list[dict | None] = []
        for values in self.raw(ids):
            if values[self.live] is None:
                out.append(None)
                continue
            row = dict(zip(self.fields, values))
            for name, decode in self.typed:
                if row[name] is not None:
                    row[name] = decode(row[name])
            out.append(row)
        return out


def ours_raw(store: OnlineStore, model: str | None = None) -> Callable[[list[str]], list]:
    """Ours' read script on ours' decoding connection, without the typing: its transport alone."""
    layout = store.layout(model)

    def read(ids: list[str]) -> list:
        return store._read(keys=[layout.prefix + d for d in ids], args=layout.fields, client=store._reader)

    return read


def readers(url: str, model: str | None = None) -> dict[str, Callable[[list[str]], list]]:
    store = OnlineStore(redis.Redis.from_url(url), "v1")
    return {"ours": lambda ids: store.get_online_features(ids, model=model), "reference": ReferenceReader(url, store, model)}


# --- measuring ---------------------------------------------------------------------------------


def percentiles(samples_ns: list[int]) -> tuple[float, float]:
    """p50 and p99 in µs."""
    samples = sorted(samples_ns)
    return samples[len(samples) // 2] / 1000, samples[min(len(samples) - 1, int(len(samples) * 0.99))] / 1000


def interleaved(
    sides: dict[str, Callable], arguments: list, warmup: int, prepare: Callable[[], object] | None = None
) -> dict[str, list[int]]:
    """Nanoseconds of each side's call on each argument, the sides called in turn (which goes
    first alternates), after `warmup` untimed rounds; `prepare` runs untimed before every call."""
    samples: dict[str, list[int]] = {name: [] for name in sides}
    order = list(sides.items())
    for i, argument in enumerate(arguments):
        for name, fn in order if i % 2 == 0 else order[::-1]:
            if prepare is not None:
                prepare()
            started = time.perf_counter_ns()
            fn(argument)
            elapsed = time.perf_counter_ns() - started
            if i >= warmup:
                samples[name].append(elapsed)
    return samples


def ratio(ours: float, reference: float) -> float:
    return round(ours / reference, 3)


def random_calls(ids: list[str], count: int, batch: int, seed: int) -> list[list[str]]:
    rng = random.Random(seed)
    return [rng.sample(ids, batch) for _ in range(count)]


def read_latencies(what: str, sides: dict[str, Callable], ids: list[str], batch: int, args, comparison: str) -> dict:
    """p50 and p99 of each side reading `batch` random devices per call, interleaved; medians over the runs."""
    runs: dict[str, list[float]] = {k: [] for k in ("ours_p50_us", "ours_p99_us", "reference_p50_us", "reference_p99_us")}
    for repeat in range(args.repeats):
        calls = random_calls(ids, args.calls + args.warmup, batch, seed=repeat)
        for name, samples in interleaved(sides, calls, args.warmup).items():
            p50, p99 = percentiles(samples)
            runs[f"{name}_p50_us"].append(p50)
            runs[f"{name}_p99_us"].append(p99)
    row = {"what": what, "devices_per_call": batch, "comparison": comparison} | {k: round(statistics.median(v), 1) for k, v in runs.items()}
    row["p50_ratio"] = ratio(row["ours_p50_us"], row["reference_p50_us"])
    row["p99_ratio"] = ratio(row["ours_p99_us"], row["reference_p99_us"])
    print(
        f"  {what:<26} {batch:>3} dev {comparison:<5} ours p50 {row['ours_p50_us']:>7,.0f} p99 {row['ours_p99_us']:>7,.0f} µs | "
        f"reference p50 {row['reference_p50_us']:>7,.0f} p99 {row['reference_p99_us']:>7,.0f} µs | "
        f"ratio p50 {row['p50_ratio']:.2f}x p99 {row['p99_ratio']:.2f}x",
        flush=True,
    )
    return row


def prehydration(client: redis.Redis, store: OnlineStore, table: pa.Table, into: str, repeats: int) -> dict:
    """Seconds of ours and the reference writing `table`, into an empty store or over a live one."""
    sides = {"ours": lambda _: ours_project(store, table), "reference": lambda _: reference_project(client, store, table)}
    client.flushdb()
    ours_project(store, table)
    samples = interleaved(sides, range(repeats + 1), warmup=1, prepare=client.flushdb if into == "empty" else None)
    row = {"devices": table.num_rows, "into": into} | {
        f"{name}_seconds": round(statistics.median(s) / 1e9, 3) for name, s in samples.items()
    }
    row["ratio"] = ratio(row["ours_seconds"], row["reference_seconds"])
    return row


def check_same_entries(client: redis.Redis, store: OnlineStore, table: pa.Table, sample: list[str]) -> None:
    """Ours and the reference leave the same hashes, each with a TTL (ours keeps its projection state besides)."""
    keys = [store.prefix + d for d in sample]
    written = {}
    for side, write in (("ours", ours_project), ("reference", lambda s, t: reference_project(client, s, t))):
        client.flushdb()
        write(store, table)
        assert all(0 < client.pttl(k) <= TTL_MS for k in keys), f"{side}: an entry without the TTL"
        written[side] = ([client.hgetall(k) for k in keys], client.dbsize())
    (ours, ours_keys), (reference, reference_keys) = written.values()
    assert ours == reference and ours_keys == reference_keys + 1, "the reference writes differ from ours"


# --- concurrent readers ------------------------------------------------------------------------


def read_until(read: Callable, calls: list[list[str]], start_at: float, stop) -> list[tuple[int, int, int]]:
    """(start ns, end ns, devices without an entry) of every call from `start_at` until `stop` is set."""
    time.sleep(max(0.0, start_at - time.perf_counter()))
    spans = []
    i = 0
    while not stop.value:
        ids = calls[i % len(calls)]
        i += 1
        started = time.perf_counter_ns()
        rows = read(ids)
        spans.append((started, time.perf_counter_ns(), rows.count(None)))
    return spans


def reader(url: str, devices: int, seed: int, inbox, outbox, stop) -> None:
    """One concurrent reader: its own `OnlineStore` and its own reference client, warmed up, then
    one `read_until` per command (side name, start time) until None."""
    sides = readers(url)
    calls = random_calls(device_ids(devices), 500, READ_BATCH, seed)
    for read in sides.values():
        for ids in calls[:20]:
            read(ids)
    outbox.put(None)
    while (command := inbox.get()) is not None:
        side, start_at = command
        outbox.put(read_until(sides[side], calls, start_at, stop))


class Readers:
    """`count` concurrent readers, started once, in processes (spawned) or in threads of this process."""

    def __init__(self, url: str, devices: int, count: int, processes: bool):
        context = multiprocessing.get_context("spawn")
        make_queue = context.Queue if processes else queue.Queue
        self.stop = context.RawValue("b", 0)
        self.outbox = make_queue()
        self.inboxes = [make_queue() for _ in range(count)]
        start = context.Process if processes else threading.Thread
        self.workers = [
            start(target=reader, args=(url, devices, seed, inbox, self.outbox, self.stop), daemon=True)
            for seed, inbox in enumerate(self.inboxes)
        ]
        for worker in self.workers:
            worker.start()
        for _ in self.workers:
            self.outbox.get(timeout=300)

    def run(self, side: str, count: int, seconds: float, work: Callable[[], object] | None = None) -> dict:
        """`count` readers of `side` (reading for 0.2 s already) timed over `seconds`, or with `work`
        over its run but at most `seconds` (then it completes unobserved)."""
        self.stop.value = 0
        start_at = time.perf_counter() + 0.5
        for inbox in self.inboxes[:count]:
            inbox.put((side, start_at))
        time.sleep(max(0.0, start_at + 0.2 - time.perf_counter()))
        worker = threading.Thread(target=work or (lambda: time.sleep(seconds)))
        window_start = time.perf_counter_ns()
        worker.start()
        worker.join(timeout=seconds)
        window_end = time.perf_counter_ns()
        self.stop.value = 1
        spans = [s for _ in range(count) for s in self.outbox.get(timeout=300) if s[0] >= window_start and s[1] <= window_end]
        worker.join()
        p50, p99 = percentiles([end - start for start, end, _ in spans])
        return {
            "reads_per_s": len(spans) * READ_BATCH / ((window_end - window_start) / 1e9),
            "p50_us": p50,
            "p99_us": p99,
            "missing": sum(m for _, _, m in spans),
            "window_seconds": (window_end - window_start) / 1e9,
        }

    def close(self) -> None:
        for inbox in self.inboxes:
            inbox.put(None)
        for worker in self.workers:
            worker.join(timeout=30)


def concurrency(
    pool: Readers,
    mode: str,
    levels: list[int],
    repeats: int,
    seconds: float,
    writes: dict[str, Callable[[], object]] | None = None,
    during: str | None = None,
) -> list[dict]:
    """Per number of readers: each side's throughput and latency (medians over `repeats` phases,
    the sides alternating), idle or while `writes[side]` pre-hydrates."""
    rows = []
    sides = ("ours", "reference")
    for count in levels:
        runs: dict[str, list[dict]] = {side: [] for side in sides}
        for repeat in range(repeats):
            for side in sides if repeat % 2 == 0 else sides[::-1]:
                runs[side].append(pool.run(side, count, seconds, writes and writes[side]))
        row: dict = {"readers": count, "mode": mode, "during": during}
        for side in sides:
            for key in runs[side][0]:
                row[f"{side}_{key}"] = round(statistics.median(r[key] for r in runs[side]), 3 if key == "window_seconds" else 1)
        row["throughput_ratio"] = ratio(row["reference_reads_per_s"], row["ours_reads_per_s"])
        row["p50_ratio"] = ratio(row["ours_p50_us"], row["reference_p50_us"])
        row["p99_ratio"] = ratio(row["ours_p99_us"], row["reference_p99_us"])
        rows.append(row)
        print(
            f"  {mode:<9} {count:>2} readers{' during ' + during if during else '':<22} "
            f"ours {row['ours_reads_per_s']:>9,.0f} reads/s p50 {row['ours_p50_us'] / 1000:>6.2f} p99 {row['ours_p99_us'] / 1000:>6.2f} ms | "
            f"reference {row['reference_reads_per_s']:>9,.0f} reads/s p50 {row['reference_p50_us'] / 1000:>6.2f} p99 {row['reference_p99_us'] / 1000:>6.2f} ms | "
            f"ratio throughput {row['throughput_ratio']:.2f}x p50 {row['p50_ratio']:.2f}x p99 {row['p99_ratio']:.2f}x"
            + (f" | missing ours {row['ours_missing']:.0f} reference {row['reference_missing']:.0f}" if during else ""),
            flush=True,
        )
    return rows


def server_time(client: redis.Redis, writes: dict[str, Callable[[], object]]) -> dict[str, dict]:
    """Per writer, run alone over the live store: the write command the server spent longest on per
    call (INFO commandstats; a script is one call), its calls and mean time per call, and the
    write's seconds. A read arriving while the server runs a call waits for the rest of it."""
    out = {}
    for name, write in writes.items():
        client.config_resetstat()
        started = time.perf_counter()
        write()
        seconds = time.perf_counter() - started
        stats = client.info("commandstats")
        # Commands inside a script are counted too, but do not run on their own.
        top = {
            k.removeprefix("cmdstat_"): v
            for k, v in stats.items()
            if k in ("cmdstat_evalsha", "cmdstat_hset", "cmdstat_del", "cmdstat_pexpire")
        }
        slowest = max(top, key=lambda k: top[k]["usec_per_call"])
        out[name] = {
            "command": slowest,
            "calls": top[slowest]["calls"],
            "ms_per_call": round(top[slowest]["usec_per_call"] / 1000, 3),
            "write_seconds": round(seconds, 3),
        }
        print(
            f"  {name:<52} {slowest:<8} {out[name]['calls']:>7,} calls, {out[name]['ms_per_call']:.3f} ms each; the write {seconds:.2f} s",
            flush=True,
        )
    return out


# --- Delta -------------------------------------------------------------------------------------


def from_delta(client: redis.Redis, store: OnlineStore, tables: dict[int, pa.Table], repeats: int, directory: str) -> list[dict]:
    """Ours end to end from a `device_objects` Delta table into an empty store, and of that the Spark read into Arrow."""
    from fs_assets.ontology.objects import objects_arrow
    from fs_resources.schemas import device_spark_schema
    from fs_resources.spark import delta_spark_conf, get_spark_session

    spark = get_spark_session(delta_spark_conf(master="local[2]", shuffle_partitions=2))
    rows = []
    for devices, table in tables.items():
        path = f"{directory}/device_objects_{devices}"
        spark.createDataFrame(table, device_spark_schema()).write.format("delta").mode("overwrite").save(path)
        totals, reads = [], []
        for _ in range(repeats + 1):
            client.flushdb()
            started = time.perf_counter()
            objects = objects_arrow(spark.read.format("delta").load(path))
            read = time.perf_counter() - started
            ours_project(store, objects)
            totals.append(time.perf_counter() - started)
            reads.append(read)
        row = {
            "devices": devices,
            "runs": repeats,
            "end_to_end_seconds": round(statistics.median(totals[1:]), 3),
            "delta_read_seconds": round(statistics.median(reads[1:]), 3),
        }
        rows.append(row)
        print(
            f"  from Delta {devices:>7,} devices: {row['end_to_end_seconds']:.2f} s end to end, of which the Spark read {row['delta_read_seconds']:.2f} s",
            flush=True,
        )
    return rows


# --- main --------------------------------------------------------------------------------------


def targets(results: dict) -> list[dict]:
    checks = []
    for row in results["prehydration"]:
        checks.append(
            {
                "target": f"pre-hydration {row['devices']:,} into {row['into']} store ratio <= {MAX_RATIO}x",
                "value": row["ratio"],
                "met": row["ratio"] <= MAX_RATIO,
            }
        )
    for row in results["reads"]:
        for p in ("p50", "p99"):
            value = row[f"{p}_ratio"]
            checks.append(
                {
                    "target": f"read {row['what']} x{row['devices_per_call']} ({row['comparison']}) {p} ratio <= {MAX_RATIO}x",
                    "value": value,
                    "met": value <= MAX_RATIO,
                }
            )
    for row in results["concurrency"]:
        if row["during"] and "batch_size=" in row["during"]:
            continue  # the former default, measured for comparison: not what `project` does
        label = f"{row['readers']} {row['mode']} readers" + (f" during {row['during']}" if row["during"] else "")
        for key in ("throughput_ratio", "p50_ratio", "p99_ratio"):
            checks.append({"target": f"{label} {key.replace('_', ' ')} <= {MAX_RATIO}x", "value": row[key], "met": row[key] <= MAX_RATIO})
        # One reader's 100-device read: with more reader processes than the 2 cores, a p99 measures
        # the CPU queue, reported beside it.
        if row["during"] and row["readers"] == 1:
            p99_ms = row["ours_p99_us"] / 1000
            checks.append({"target": f"{label}: ours p99 < {MAX_P99_DURING_MS:.0f} ms", "value": p99_ms, "met": p99_ms < MAX_P99_DURING_MS})
    return checks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, nargs="+", default=[10_000, 100_000], help="pre-hydration sizes; reads use the largest")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--calls", type=int, default=1000, help="timed read calls per side per run")
    parser.add_argument("--warmup", type=int, default=200, help="untimed read calls per side per run, before the timed ones")
    parser.add_argument("--readers", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--seconds", type=float, default=1.5, help="length of an idle concurrent phase")
    parser.add_argument(
        "--during-seconds",
        type=float,
        default=5.0,
        help="longest a concurrent phase during a pre-hydration is timed (readers starve the writer on few cores; it then completes alone)",
    )
    parser.add_argument("--no-delta", action="store_true", help="skip the end to end figure from a Delta table (Spark)")
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run: --repeats 1 --calls 300 --warmup 50 --seconds 1 --during-seconds 3 --no-delta"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.calls, args.warmup, args.seconds, args.during_seconds, args.no_delta = 1, 300, 50, 1.0, 3.0, True

    started = time.perf_counter()
    largest = max(args.devices)
    tables = {n: device_table(n) for n in sorted(args.devices)}
    ids = device_ids(largest)
    results: dict = {
        "repeats": args.repeats,
        "calls": args.calls,
        "warmup_calls": args.warmup,
        "concurrent_phase_seconds": {"idle": args.seconds, "during_prehydration_at_most": args.during_seconds},
        "ratios": "ours / reference for times; reference / ours for throughput; above 1 ours is slower",
        "reads_per_s": f"devices read per second by all readers together ({READ_BATCH} per call)",
        "machine": {"cpus": os.cpu_count(), "load_average_at_start": [round(x, 2) for x in os.getloadavg()]},
        "targets": {"max_ratio": MAX_RATIO, "max_p99_ms_during_prehydration": MAX_P99_DURING_MS},
        "reference": {
            "prehydration": f"same Arrow table, same encode_objects, redis-py pipeline of DEL + HSET + PEXPIRE {TTL_MS} ms per device, {WRITE_CHUNK} devices per round trip",
            "reads": "redis-py HMGET of the same 12 fields of the same keys (pipelined for more than 1), decode_responses=True",
            "typed": "both return typed values (float, int, date, aware datetime; None without an entry), checked equal",
            "raw": "ours' read script without typing against the pipelined HMGET without typing, both str values",
            "concurrent_readers": "processes, each with its own OnlineStore / redis-py client; threads measured idle for comparison",
        },
    }
    with tempfile.TemporaryDirectory() as tmp:
        server = EmbeddedRedis(Path(tmp) / "redis", persistent=False)
        url = server.start()
        try:
            client = redis.Redis.from_url(url)
            store = OnlineStore(client, "v1")
            results["redis"] = client.info("server")["redis_version"]
            check_same_entries(client, store, tables[min(args.devices)], ids[:50])

            print("pre-hydration from Arrow (seconds, median)", flush=True)
            results["prehydration"] = []
            for devices, table in tables.items():
                for into in ("empty", "overwrite"):
                    row = prehydration(client, store, table, into, args.repeats)
                    results["prehydration"].append(row)
                    print(
                        f"  {devices:>7,} devices into {into:<9} ours {row['ours_seconds']:.2f} s | reference {row['reference_seconds']:.2f} s | ratio {row['ratio']:.2f}x",
                        flush=True,
                    )
            encode_started = time.perf_counter()
            store.encode_objects(tables[largest])
            sweep_started = time.perf_counter()
            store.live_device_ids()
            results["ours_parts_seconds"] = {
                "devices": largest,
                "encode_objects": round(sweep_started - encode_started, 3),
                "sweep_scan": round(time.perf_counter() - sweep_started, 3),
            }
            print(
                f"  of ours at {largest:,}: encoding {results['ours_parts_seconds']['encode_objects']:.2f} s (the reference does it too), sweep SCAN {results['ours_parts_seconds']['sweep_scan']:.2f} s"
            )

            print("reads (µs per call, median of runs' p50 / p99)", flush=True)
            ours_project(store, vector_table(largest), model=MODEL)
            device_sides, model_sides = readers(url), readers(url, MODEL)
            sample = random_calls(ids, 1, READ_BATCH, seed=99)[0] + ["dev-9999999"]
            for sides in (device_sides, model_sides):
                assert sides["ours"](sample) == sides["reference"](sample), "ours and the reference read different values"
            raw = {"ours": ours_raw(store), "reference": device_sides["reference"].raw}
            results["reads"] = [
                read_latencies("Device", device_sides, ids, 1, args, "typed"),
                read_latencies("Device", device_sides, ids, READ_BATCH, args, "typed"),
                read_latencies("Device", raw, ids, READ_BATCH, args, "raw"),
                read_latencies(f"{MODEL} vector", model_sides, ids, 1, args, "typed"),
                read_latencies(f"{MODEL} vector", model_sides, ids, READ_BATCH, args, "typed"),
            ]

            print(f"concurrent readers of {READ_BATCH} random devices per call (medians of {args.repeats} phases)", flush=True)
            table = tables[largest]
            writing = {"ours": lambda: ours_project(store, table), "reference": lambda: reference_project(client, store, table)}
            results["concurrency"] = []
            for processes in (True, False):
                # One thread reads as one process does: threads only where they share the GIL.
                levels = args.readers if processes else [n for n in args.readers if n > 1]
                pool = Readers(url, largest, max(levels), processes)
                mode = "processes" if processes else "threads"
                try:
                    results["concurrency"] += concurrency(pool, mode, levels, args.repeats, args.seconds)
                    if processes:
                        during = f"pre-hydration of {largest:,}"
                        results["concurrency"] += concurrency(pool, mode, levels, args.repeats, args.during_seconds, writing, during)
                        large = writing | {"ours": lambda: ours_project(store, table, **LARGE_BATCHES)}
                        results["concurrency"] += concurrency(
                            pool,
                            mode,
                            levels[:1],
                            args.repeats,
                            args.during_seconds,
                            large,
                            f"{during}, ours batch_size={LARGE_BATCHES['batch_size']}",
                        )
                finally:
                    pool.close()

            print(f"server time per write command, pre-hydration of {largest:,} over the live store, alone", flush=True)
            results["server_time"] = server_time(
                client,
                {
                    "ours (batch_size=50, the default)": lambda: ours_project(store, table),
                    f"ours with batch_size={LARGE_BATCHES['batch_size']} (same devices per round trip)": lambda: ours_project(
                        store, table, **LARGE_BATCHES
                    ),
                    "reference": lambda: reference_project(client, store, table),
                },
            )

            if not args.no_delta:
                print("pre-hydration from Delta (ours only)", flush=True)
                results["prehydration_from_delta"] = from_delta(client, store, tables, min(args.repeats, 3), tmp)
        finally:
            server.stop()

    results["wall_seconds"] = round(time.perf_counter() - started)
    results["targets_met"] = targets(results)
    print(f"targets (ratio <= {MAX_RATIO}x, p99 during pre-hydration < {MAX_P99_DURING_MS:.0f} ms):")
    for check in results["targets_met"]:
        print(f"  {'met    ' if check['met'] else 'NOT MET'} {check['target']}: {check['value']:.2f}")
    write_results("online", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
