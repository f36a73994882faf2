"""The online store: `Device` objects as Redis hashes, written by pre-hydration, read in one round trip.

Layout (per feature set version `v`):

- `fs:{v}:device:{device_id}`: one hash per served device, one field per non-NULL property of
  `DEVICE`, with a TTL (default 2 h) so an entry nobody refreshes expires instead of lying.
- `fs:{v}:projection`: the projection's own state: `hydrated_at` of the last complete projection
  (what the lag check reads), `live_devices`, `newest_started`.

Values are text a person can read in `redis-cli` and that decode to exactly what the offline store
holds: doubles as Python's shortest round-trip `repr` (the same float64 back, bit for bit), longs
as decimal, dates as ISO dates, timestamps as fixed-width ISO UTC (`2026-01-06T00:00:00.000000+00:00`),
fixed width so the timestamp guard can compare them as strings inside Redis.

Every write goes through one Lua script per batch of devices: a device's hash is deleted and
rewritten in one atomic step (no reader sees it half-written, no field of an older snapshot
survives), and only when the stored `hydrated_at` is not newer than the one being written (an older
projection finishing late never overwrites a newer one). Batches are idempotent, so a batch that
failed on a dropped connection is simply sent again.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from functools import lru_cache
from typing import Callable, Iterable, Sequence

import redis

from fs_assets.features.registry import DEFAULT_FEATURE_SET_VERSION
from fs_assets.ingest.contract import DEVICE_ID_PATTERN
from fs_assets.ontology.device_object import DEVICE, SERVED_STATUSES
from fs_resources.redis_store import EmbeddedRedis, redact

DEFAULT_TTL_SECONDS = 2 * 3600
TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%S.%f"


def key_prefix(version: str) -> str:
    return f"fs:{version}:device:"


def projection_key(version: str) -> str:
    return f"fs:{version}:projection"


class UnknownProperty(ValueError):
    pass


class InvalidDeviceId(ValueError):
    pass


class OnlineStoreUnavailable(RuntimeError):
    """Redis could not be reached after the configured retries."""


# --- encoding ---------------------------------------------------------------------------------


def encode_timestamp(value: datetime) -> str:
    if value.tzinfo is not None:
        value = value.astimezone(timezone.utc).replace(tzinfo=None)
    return value.strftime(TIMESTAMP_FORMAT) + "+00:00"


def _encode_double(value: float) -> str:
    return repr(float(value))


def _encode_long(value: int) -> str:
    return str(int(value))


def _encode_date(value: date) -> str:
    return value.isoformat()


def _encode_string(value: str) -> str:
    return str(value)


ENCODERS: dict[str, Callable[[object], str]] = {
    "double": _encode_double,
    "long": _encode_long,
    "date": _encode_date,
    "timestamp": encode_timestamp,
    "string": _encode_string,
}


@lru_cache(maxsize=4096)
def _decode_timestamp(raw: bytes) -> datetime:
    return datetime.fromisoformat(raw.decode())


@lru_cache(maxsize=4096)
def _decode_date(raw: bytes) -> date:
    return date.fromisoformat(raw.decode())


@lru_cache(maxsize=65536)
def _decode_string(raw: bytes) -> str:
    return raw.decode()


DECODERS: dict[str, Callable[[bytes], object]] = {
    "double": float,
    "long": int,
    "date": _decode_date,
    "timestamp": _decode_timestamp,
    "string": _decode_string,
}


def validate_device_id(device_id: object) -> str:
    if not isinstance(device_id, str) or not DEVICE_ID_PATTERN.fullmatch(device_id):
        raise InvalidDeviceId(f"{device_id!r} is not a device id (expected a registry id such as 'dev-00042')")
    return device_id


# --- scripts ----------------------------------------------------------------------------------

# KEYS[1] = projection key; ARGV[1] = hydrated_at. Records the newest projection started; 0 when a
# newer one already started (this one is superseded and writes nothing).
_BEGIN = """
local newest = redis.call('HGET', KEYS[1], 'newest_started')
if newest and newest > ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'newest_started', ARGV[1])
return 1
"""

# KEYS[1] = projection key, KEYS[2..] = device keys; ARGV = hydrated_at, ttl_ms, then per device
# n followed by n field/value pairs (n = 0: remove the entry). Returns {written, skipped, removed},
# or {-1, 0, 0} when a newer projection has started since.
_UPSERT = """
local ts = ARGV[1]
local ttl = tonumber(ARGV[2])
local newest = redis.call('HGET', KEYS[1], 'newest_started')
if newest and newest > ts then return {-1, 0, 0} end
local written, skipped, removed = 0, 0, 0
local pos = 3
for i = 2, #KEYS do
  local n = tonumber(ARGV[pos])
  local current = redis.call('HGET', KEYS[i], 'hydrated_at')
  if current and current > ts then
    skipped = skipped + 1
  elseif n == 0 then
    removed = removed + redis.call('DEL', KEYS[i])
  else
    redis.call('DEL', KEYS[i])
    redis.call('HSET', KEYS[i], unpack(ARGV, pos + 1, pos + 2 * n))
    redis.call('PEXPIRE', KEYS[i], ttl)
    written = written + 1
  end
  pos = pos + 1 + 2 * n
end
return {written, skipped, removed}
"""

# KEYS[1] = projection key; ARGV = hydrated_at, live devices, completed_at, source.
_COMPLETE = """
local done = redis.call('HGET', KEYS[1], 'hydrated_at')
if done and done > ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'hydrated_at', ARGV[1], 'live_devices', ARGV[2], 'completed_at', ARGV[3], 'source', ARGV[4])
return 1
"""


@dataclass
class ProjectionReport:
    hydrated_at: str
    written: int = 0
    removed: int = 0
    skipped_newer: int = 0
    orphans_removed: int = 0
    live_devices: int = 0
    batches: int = 0
    retries: int = 0
    superseded: bool = False
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ProjectionState:
    hydrated_at: datetime | None
    newest_started: datetime | None
    live_devices: int | None
    source: str | None


class OnlineStore:
    """Reads and writes `Device` objects of one feature set version in Redis."""

    def __init__(self, client: redis.Redis, feature_set_version: str = DEFAULT_FEATURE_SET_VERSION):
        self.client = client
        self.version = feature_set_version
        self.prefix = key_prefix(feature_set_version)
        self.projection_key = projection_key(feature_set_version)
        self._begin = client.register_script(_BEGIN)
        self._upsert = client.register_script(_UPSERT)
        self._complete = client.register_script(_COMPLETE)
        self._all_fields = DEVICE.property_names
        self._dtypes = {p.name: p.dtype for p in DEVICE.properties}

    @classmethod
    def connect(cls, url: str | None = None, feature_set_version: str | None = None, socket_timeout: float = 2.0) -> "OnlineStore":
        """The store at `url`, else REDIS_URL, else the embedded server `make run` started."""
        url = url or os.environ.get("REDIS_URL") or EmbeddedRedis().url()
        if url is None:
            raise OnlineStoreUnavailable("no Redis to read from: set REDIS_URL, or start the embedded server (`make run`, or `python -m fs_resources.redis_store start`)")
        client = redis.Redis.from_url(url, socket_timeout=socket_timeout, socket_connect_timeout=socket_timeout)
        version = feature_set_version or os.environ.get("FS_FEATURE_SET_VERSION") or DEFAULT_FEATURE_SET_VERSION
        return cls(client, version)

    # --- reads --------------------------------------------------------------------------------

    def _request_fields(self, properties: Sequence[str] | None) -> tuple[str, ...]:
        if properties is None:
            return self._all_fields
        if isinstance(properties, str):
            raise TypeError("properties must be a list of property names, not one string")
        unknown = [p for p in properties if p not in self._dtypes]
        if unknown:
            raise UnknownProperty(f"unknown {DEVICE.name} properties {unknown}; known: {list(self._all_fields)}")
        return tuple(properties)

    def get_online_features(self, device_ids: Sequence[str], properties: Sequence[str] | None = None) -> list[dict | None]:
        """One dict per requested device, in order; None where the device has no live entry.

        Values are typed as in the offline store: float, int, str, `datetime.date`, aware UTC
        `datetime`; a property NULL offline is None. All devices are read in one round trip.
        """
        if isinstance(device_ids, str):
            raise TypeError("device_ids must be a list of device ids, not one string")
        fields = self._request_fields(properties)
        # hydrated_at is always present in a live entry: it tells "no entry" from "all NULL".
        request = fields if "hydrated_at" in fields else (*fields, "hydrated_at")
        decoders = [DECODERS[self._dtypes[f]] for f in fields]
        keys = [self.prefix + validate_device_id(d) for d in device_ids]
        if len(keys) == 1:
            replies = [self.client.execute_command("HMGET", keys[0], *request)]
        else:
            pipe = self.client.pipeline(transaction=False)
            for key in keys:
                pipe.execute_command("HMGET", key, *request)
            replies = pipe.execute()
        out: list[dict | None] = []
        for values in replies:
            if values[-1] is None:
                out.append(None)
                continue
            out.append({f: None if v is None else decode(v) for f, decode, v in zip(fields, decoders, values)})
        return out

    def live_device_ids(self) -> set[str]:
        """Every device with a live entry (one SCAN over the version's key prefix)."""
        start = len(self.prefix)
        return {key[start:].decode() for key in self.client.scan_iter(match=self.prefix + "*", count=1000)}

    def projection_state(self) -> ProjectionState | None:
        raw = self.client.hgetall(self.projection_key)
        if not raw:
            return None

        def ts(name: bytes) -> datetime | None:
            return _decode_timestamp(raw[name]) if name in raw else None

        return ProjectionState(
            hydrated_at=ts(b"hydrated_at"),
            newest_started=ts(b"newest_started"),
            live_devices=int(raw[b"live_devices"]) if b"live_devices" in raw else None,
            source=raw[b"source"].decode() if b"source" in raw else None,
        )

    # --- writes -------------------------------------------------------------------------------

    def encode_objects(self, columns: dict[str, list]) -> tuple[list[str], list[list[str]], list[str]]:
        """Device ids, each served device's field/value list, and the ids to remove (retired).

        `columns` maps every property of `DEVICE` to its values (None for NULL), row-aligned.
        """
        missing = [p for p in self._all_fields if p not in columns]
        if missing:
            raise ValueError(f"device objects lack properties {missing}")
        ids = columns[DEVICE.primary_key]
        bad = [d for d in ids if not (isinstance(d, str) and DEVICE_ID_PATTERN.fullmatch(d))]
        if bad:
            raise InvalidDeviceId(f"{len(bad)} device ids are not valid keys, e.g. {bad[:5]}; nothing was written")
        encoded = []
        for name in self._all_fields:
            encode = ENCODERS[self._dtypes[name]]
            cache: dict = {}
            values = []
            for v in columns[name]:
                if v is None:
                    values.append(None)
                elif self._dtypes[name] in ("date", "timestamp", "string"):
                    text = cache.get(v)
                    if text is None:
                        text = cache[v] = encode(v)
                    values.append(text)
                else:
                    values.append(encode(v))
            encoded.append((name, values))
        served, payloads, retired = [], [], []
        statuses = columns["status"]
        for i, device_id in enumerate(ids):
            if statuses[i] not in SERVED_STATUSES:
                retired.append(device_id)
                continue
            payload = []
            for name, values in encoded:
                if values[i] is not None:
                    payload += (name, values[i])
            served.append(device_id)
            payloads.append(payload)
        return served, payloads, retired

    def project(
        self,
        columns: dict[str, list],
        hydrated_at: datetime,
        *,
        ttl_seconds: int = DEFAULT_TTL_SECONDS,
        source: str = "",
        batch_size: int = 500,
        batches_per_round_trip: int = 8,
        retries: int = 3,
        backoff_seconds: float = 0.5,
        on_batch: Callable[[int, int], None] | None = None,
        log: Callable[[str], None] = lambda message: None,
    ) -> ProjectionReport:
        """Write every served device, remove retired and unknown ones; the newest snapshot wins.

        A connection failure is retried `retries` times with doubling backoff, then raises
        `OnlineStoreUnavailable`; the projection state is only marked complete at the end, so the
        lag check keeps reporting the last complete projection.
        """
        started = time.monotonic()
        ts = encode_timestamp(hydrated_at)
        report = ProjectionReport(hydrated_at=ts)
        served, payloads, retired = self.encode_objects(columns)
        call = _Retrying(self.client, retries, backoff_seconds, log, report)

        if not call(lambda pipe: self._begin(keys=[self.projection_key], args=[ts], client=pipe))[0]:
            report.superseded = True
            report.notes.append("a newer projection had already started; nothing written")
            return report

        ttl_ms = str(int(ttl_seconds * 1000))
        work = [(d, p) for d, p in zip(served, payloads)] + [(d, []) for d in retired]
        total = len(work)
        step = batch_size * batches_per_round_trip
        for offset in range(0, total, step):
            chunk = work[offset : offset + step]

            def send(pipe, chunk=chunk):
                for start in range(0, len(chunk), batch_size):
                    batch = chunk[start : start + batch_size]
                    keys = [self.projection_key] + [self.prefix + d for d, _ in batch]
                    args = [ts, ttl_ms]
                    for _, payload in batch:
                        args.append(len(payload) // 2)
                        args += payload
                    self._upsert(keys=keys, args=args, client=pipe)

            for written, skipped, removed in call(send):
                if written == -1:
                    report.superseded = True
                    report.notes.append("a newer projection started meanwhile; stopped")
                    report.seconds = time.monotonic() - started
                    return report
                report.written += written
                report.skipped_newer += skipped
                report.removed += removed
                report.batches += 1
            if on_batch is not None:
                on_batch(min(offset + step, total), total)

        # Entries of devices no longer in the registry at all (the guard still applies).
        known = set(served) | set(retired)
        orphans = sorted(call.read(self.live_device_ids) - known)
        for start in range(0, len(orphans), batch_size):
            batch = orphans[start : start + batch_size]
            keys = [self.projection_key] + [self.prefix + d for d in batch]
            args = [ts, ttl_ms] + [0] * len(batch)
            (result,) = call(lambda pipe, keys=keys, args=args: self._upsert(keys=keys, args=args, client=pipe))
            report.orphans_removed += result[2]

        report.live_devices = len(served)
        completed = encode_timestamp(datetime.now(timezone.utc))
        call(lambda pipe: self._complete(keys=[self.projection_key], args=[ts, len(served), completed, source], client=pipe))
        report.seconds = time.monotonic() - started
        return report


class _Retrying:
    """Runs one pipelined round trip, retrying it (it is idempotent) on connection failures."""

    def __init__(self, client: redis.Redis, retries: int, backoff: float, log: Callable[[str], None], report: ProjectionReport):
        self.client, self.retries, self.backoff, self.log, self.report = client, retries, backoff, log, report

    def __call__(self, fill: Callable) -> list:
        """`fill` queues commands on a fresh pipeline; their replies come back in order."""

        def round_trip():
            pipe = self.client.pipeline(transaction=False)
            fill(pipe)
            return pipe.execute()

        return self.read(round_trip)

    def read(self, fn: Callable):
        attempt = 0
        while True:
            try:
                return fn()
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                attempt += 1
                if attempt > self.retries:
                    raise OnlineStoreUnavailable(
                        f"Redis unreachable after {attempt} attempts ({type(exc).__name__}: {redact(str(exc))}); "
                        "devices written before the failure are complete and newer, every other entry is unchanged; "
                        "the next run completes the projection"
                    ) from exc
                wait = self.backoff * 2 ** (attempt - 1)
                self.report.retries += 1
                self.log(f"Redis call failed ({type(exc).__name__}); retry {attempt}/{self.retries} in {wait:.1f} s")
                time.sleep(wait)


def rows_to_columns(rows: Iterable[dict]) -> dict[str, list]:
    """Column lists of `DEVICE` properties from row dicts (for callers without Arrow)."""
    rows = list(rows)
    return {name: [r.get(name) for r in rows] for name in DEVICE.property_names}
