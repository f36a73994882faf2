"""Benchmark: `fs-serve` under fixed request rates, against a minimal server doing the same Redis reads.

    .venv/bin/python bench/serve_bench.py [--devices 10000] [--seconds 20] [--repeats 2]

A real redis-server holds `--devices` Device objects and `device_health_1d` vectors (as a
pre-hydration writes them). Two servers run as their own processes on this machine, each a cold
`uvicorn` with uvloop and httptools, one at a time:

- `fs-serve`: the product (API keys, validation, statuses, the projection's age, metrics, the
  served-value log off);
- the reference: a bare ASGI callable doing the same reads (HMGET of one key, or the same Lua read
  of 100 keys, with the same fields), parsing numbers the same way and answering JSON through
  orjson; no framework, no keys, no validation, no metrics: the fastest honest same-work server
  (its startup heap frozen for the collector, as fs-serve's is).

The load generator (this process, asyncio with raw HTTP/1.1 keep-alive connections) is open loop:
each request is sent at its scheduled time and its latency is measured from that time, so a slow
server cannot hide its queue (no coordinated omission). Scenarios: one device at 500 requests/s,
100 devices at 100 requests/s, and one device at rising rates for the highest rate held with p99
under 10 ms. Servers alternate within each repeat. Writes `bench/results/serve.json`.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.results import write_results  # noqa: E402

KEY = "bench-key-0123456789abcdef"
MODEL = "device_health_1d"
CONNECTIONS = 32
SCENARIOS = [("one device, 500 req/s", 1, 500), ("100 devices, 100 req/s", 100, 100)]
RATES = (1000, 2000, 3000, 4000, 5000)
P99_TARGET_MS = 10.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _fill(url: str, devices: int) -> list[str]:
    """Device objects and model vectors as a pre-hydration writes them."""
    from datetime import UTC, datetime

    import pyarrow as pa
    import redis

    from fs_domain.device import DEVICE
    from fs_domain.models import model_spec, vector_columns
    from fs_resources.online import ARROW_TYPES, OnlineStore

    ids = [f"dev-{i:06d}" for i in range(devices)]
    now = datetime.now(UTC)
    rng = random.Random(1)
    values = {
        "double": lambda: rng.uniform(-30, 30),
        "long": lambda: rng.randrange(1440),
        "string": lambda: "active",
        "date": lambda: now.date(),
        "timestamp": lambda: now,
    }
    store = OnlineStore(redis.Redis.from_url(url), "v1")
    objects = {p.name: [values[p.dtype]() for _ in ids] for p in DEVICE.properties}
    objects["device_id"], objects["status"] = ids, ["active"] * devices
    store.project(objects, now, ttl_seconds=24 * 3600)
    columns = {"device_id": pa.array(ids)}
    for name, dtype in vector_columns(model_spec(MODEL, "v1")):
        columns[name] = pa.array([values[dtype]() for _ in ids], ARROW_TYPES[dtype])
    store.project(pa.table(columns), now, ttl_seconds=24 * 3600, model=MODEL)
    return ids


# --- the reference server: run as `python bench/serve_bench.py --reference-server PORT URL` ---------


def reference_app(url: str):
    import redis as sync_redis
    import redis.asyncio as aioredis

    from fs_resources.online import READ_SCRIPT, OnlineStore

    layout = OnlineStore(sync_redis.Redis.from_url(url), "v1").layout()
    fields = layout.fields
    numeric = {i: (float if layout.dtypes[f] == "double" else int) for i, f in enumerate(fields) if layout.dtypes[f] in ("double", "long")}
    # No per-operation socket timeout, as fs-serve (which bounds each call with one deadline instead).
    client = aioredis.Redis.from_url(url, decode_responses=True, socket_timeout=None)
    script = client.register_script(READ_SCRIPT)

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        ids = orjson.loads(body)["device_ids"]
        keys = [layout.prefix + d for d in ids]
        replies = [await client.execute_command("HMGET", keys[0], *fields)] if len(keys) == 1 else await script(keys=keys, args=fields)
        out = []
        for device_id, values in zip(ids, replies):
            if values[-1] is None:
                out.append({"device_id": device_id, "properties": None})
                continue
            for i, parse in numeric.items():
                if values[i] is not None:
                    values[i] = parse(values[i])
            out.append({"device_id": device_id, "properties": dict(zip(fields, values))})
        payload = orjson.dumps({"devices": out})
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": payload})

    return app


def serve_reference(port: int, url: str) -> None:
    import uvicorn

    app = reference_app(url)
    gc.freeze()  # as fs-serve does before it serves
    uvicorn.run(app, host="127.0.0.1", port=port, loop="uvloop", http="httptools", log_level="warning", access_log=False)


# --- the load generator ---------------------------------------------------------------------


async def _connection(port: int):
    return await asyncio.open_connection("127.0.0.1", port)


async def _request(conn, raw: bytes) -> None:
    reader, writer = conn
    writer.write(raw)
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    body = await reader.readexactly(length)
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"{head.splitlines()[0].decode()}: {body[:200]!r}")


async def load(port: int, ids: list[str], per_request: int, rate: float, seconds: float) -> dict:
    """Open loop: request i is due at start + i / rate; its latency counts from then."""
    rng = random.Random(7)
    pool: asyncio.Queue = asyncio.Queue()
    for _ in range(CONNECTIONS):
        pool.put_nowait(await _connection(port))
    latencies: list[float] = []
    errors = 0

    def raw() -> bytes:
        body = orjson.dumps({"device_ids": rng.sample(ids, per_request)})
        return (
            b"POST /v1/devices:get HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
            + f"Authorization: Bearer {KEY}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body
        )

    async def one(due: float, payload: bytes) -> None:
        nonlocal errors
        conn = await pool.get()
        try:
            await _request(conn, payload)
            latencies.append(time.perf_counter() - due)
        except Exception:  # noqa: BLE001 - counted; the connection is replaced
            errors += 1
            conn[1].close()
            conn = await _connection(port)
        finally:
            pool.put_nowait(conn)

    total = int(rate * seconds)
    in_flight: set[asyncio.Task] = set()
    # The generator's own pauses must not count against a server: Python's collector, walking every
    # request task of the run at 3,000 a second, stopped this loop for tens of milliseconds and put
    # the same tail on both servers' p99.9. The run's objects are frozen and the collector is off
    # while it sends; tasks are let go once answered.
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        start = time.perf_counter() + 0.05
        for i in range(total):
            due = start + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(one(due, raw()))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
        await asyncio.gather(*in_flight)
        elapsed = time.perf_counter() - start
    finally:
        gc.enable()
        gc.unfreeze()
    while not pool.empty():
        pool.get_nowait()[1].close()
    latencies.sort()

    def pct(p: float) -> float:
        return round(1000 * latencies[min(len(latencies) - 1, int(p * len(latencies)))], 3) if latencies else float("nan")

    return {
        "rate": rate,
        "devices_per_request": per_request,
        "requests": total,
        "errors": errors,
        "achieved_rate": round(len(latencies) / elapsed, 1),
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "p999_ms": pct(0.999),
    }


def start_server(kind: str, port: int, url: str, keys_file: Path) -> subprocess.Popen:
    env = {**os.environ, "FS_SERVE_API_KEYS_FILE": str(keys_file), "FS_SERVE_LOG_SHARE": "0", "PYTHONPATH": str(ROOT)}
    if kind == "fs-serve":
        cmd = [str(ROOT / ".venv" / "bin" / "fs-serve"), "--port", str(port), "--redis-url", url]
    else:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--reference-server", str(port), url]
    process = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return process
        except OSError:
            if process.poll() is not None:
                raise RuntimeError(f"{kind} did not start: {process.stderr.read().decode()[-2000:]}") from None
            time.sleep(0.1)
    raise RuntimeError(f"{kind} did not listen on {port}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each measured load")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--reference-server", nargs=2, metavar=("PORT", "URL"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.reference_server:
        serve_reference(int(args.reference_server[0]), args.reference_server[1])
        return 0

    from fs_resources.embedded_redis import EmbeddedRedis

    load_before = [round(x, 2) for x in os.getloadavg()]
    runs: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        redis_server = EmbeddedRedis(Path(tmp) / "redis")
        url = redis_server.start()
        try:
            ids = _fill(url, args.devices)
            keys_file = Path(tmp) / "keys"
            keys_file.write_text(f"bench {KEY}\n")
            for repeat in range(args.repeats):
                for kind in ("fs-serve", "reference") if repeat % 2 == 0 else ("reference", "fs-serve"):
                    port = _free_port()
                    process = start_server(kind, port, url, keys_file)
                    try:
                        asyncio.run(load(port, ids, 1, 200, 2.0))  # warm the connections and the server's first calls
                        for name, per_request, rate in SCENARIOS:
                            result = asyncio.run(load(port, ids, per_request, rate, args.seconds))
                            runs.append({"server": kind, "repeat": repeat, "scenario": name, **result})
                            print(f"{kind:9} {name}: {result}", flush=True)
                        for rate in RATES:
                            result = asyncio.run(load(port, ids, 1, rate, args.seconds))
                            runs.append({"server": kind, "repeat": repeat, "scenario": f"one device, {rate} req/s", **result})
                            print(f"{kind:9} one device at {rate}/s: {result}", flush=True)
                            if result["p99_ms"] > 5 * P99_TARGET_MS or result["achieved_rate"] < 0.8 * rate:
                                break
                    finally:
                        process.terminate()
                        process.wait(timeout=10)
        finally:
            redis_server.stop()

    def summary(kind: str, scenario: str) -> dict | None:
        mine = [r for r in runs if r["server"] == kind and r["scenario"] == scenario]
        if not mine:
            return None
        return {
            "p50_ms": statistics.median(r["p50_ms"] for r in mine),
            "p99_ms": statistics.median(r["p99_ms"] for r in mine),
            "p999_ms": statistics.median(r["p999_ms"] for r in mine),
            "achieved_rate": statistics.median(r["achieved_rate"] for r in mine),
            "errors": sum(r["errors"] for r in mine),
        }

    scenarios = list(dict.fromkeys(r["scenario"] for r in runs))
    table = {s: {k: summary(k, s) for k in ("fs-serve", "reference")} for s in scenarios}
    for both in table.values():
        if both["fs-serve"] and both["reference"] and both["reference"]["p99_ms"]:
            both["p99_ratio"] = round(both["fs-serve"]["p99_ms"] / both["reference"]["p99_ms"], 2)

    def held(kind: str) -> int:
        ok = [r["rate"] for r in runs if r["server"] == kind and r["devices_per_request"] == 1 and r["rate"] in RATES]
        return max(
            (rate for rate in set(ok) if (summary(kind, f"one device, {rate} req/s") or {}).get("p99_ms", 1e9) <= P99_TARGET_MS), default=0
        )

    results = {
        "devices_in_redis": args.devices,
        "seconds_per_load": args.seconds,
        "repeats": args.repeats,
        "connections": CONNECTIONS,
        "cores": os.cpu_count(),
        "load_average_before": load_before,
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "scenarios": table,
        "highest_rate_with_p99_under_10ms": {"fs-serve": held("fs-serve"), "reference": held("reference")},
        "runs": runs,
        "note": "server and load generator on one machine; open-loop load, latency from each request's scheduled time; "
        "medians over repeats, servers alternating; feast serve not installable here (its figures in the README are its own).",
    }
    write_results("serve", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
