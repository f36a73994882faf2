"""The online store: `Device` objects as Redis hashes, written by pre-hydration, read in one round trip.

Layout (per feature set version `v`):

- `fs:{v}:device:{device_id}`: one hash per served device, one field per non-NULL property of
  `DEVICE`, with a TTL (default 2 h) so an entry nobody refreshes expires instead of lying.
- `fs:{v}:projection`: the projection's own state: `hydrated_at` of the last complete projection
  (what the lag check reads), `live_devices`, `newest_started`.
- `fs:{v}:model:{model}:{device_id}`: each served model's latest input vector for the device (its
  features in the model's order, `window_start`, `window_end`, `hydrated_at`), same TTL, and
  `fs:{v}:projection:model:{model}` its projection state; `v` is the version the model is pinned
  to, which need not be the `Device` object's.

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

import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from functools import lru_cache

import pyarrow as pa
import redis
import tenacity

from fs_domain.contract import DEVICE_ID_PATTERN
from fs_domain.device import DEVICE, SERVED_STATUSES
from fs_domain.features import DEFAULT_FEATURE_SET_VERSION, FEATURE_SET_VERSIONS
from fs_domain.models import MODEL_PINS_SETTING, ModelSpec, UnknownModel, model_pins, model_spec, vector_columns
from fs_resources.embedded_redis import EmbeddedRedis, redact

DEFAULT_TTL_SECONDS = 2 * 3600
# Devices read by one Lua call: about 2 ms of server time for 12 fields, short enough that no
# other client waits noticeably behind a request for a whole fleet.
READ_CHUNK_KEYS = 1000
TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%S.%f"


def key_prefix(version: str) -> str:
    return f"fs:{version}:device:"


def projection_key(version: str) -> str:
    return f"fs:{version}:projection"


@dataclass(frozen=True)
class EntryLayout:
    """One kind of online entry: where its hashes live, where its projection state lives, and its
    fields with their types, in the order they are returned."""

    what: str
    prefix: str
    projection_key: str
    fields: tuple[str, ...]
    dtypes: dict[str, str]
    # The column that says whether a row is served (`DEVICE`'s status); None: every row is.
    status_field: str | None
    feature_set_version: str


def device_layout(version: str) -> EntryLayout:
    return EntryLayout(
        what=DEVICE.name,
        prefix=key_prefix(version),
        projection_key=projection_key(version),
        fields=DEVICE.property_names,
        dtypes={p.name: p.dtype for p in DEVICE.properties},
        status_field="status",
        feature_set_version=version,
    )


def model_layout(model: ModelSpec) -> EntryLayout:
    version = model.feature_set_version
    columns = vector_columns(model)
    return EntryLayout(
        what=f"{model.name} input vector",
        prefix=f"fs:{version}:model:{model.name}:",
        projection_key=f"fs:{version}:projection:model:{model.name}",
        fields=tuple(c for c, _ in columns),
        dtypes=dict(columns),
        status_field=None,
        feature_set_version=version,
    )


class UnknownProperty(ValueError):
    pass


class InvalidDeviceId(ValueError):
    pass


class UnknownFeatureSetVersion(ValueError):
    """A feature set version the registry does not define: it would read no entry at all."""


def known_version(version: object) -> str:
    """`version` when the feature set registry defines it; else an error naming the ones it does."""
    if version not in FEATURE_SET_VERSIONS:
        raise UnknownFeatureSetVersion(f"unknown feature set version {version!r}; known: {list(FEATURE_SET_VERSIONS)}")
    return version


class OnlineStoreUnavailable(RuntimeError):
    """Redis could not be reached after the configured retries."""


# --- encoding ---------------------------------------------------------------------------------


def encode_timestamp(value: datetime) -> str:
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
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
def _decode_timestamp(raw: str) -> datetime:
    return datetime.fromisoformat(raw)


@lru_cache(maxsize=4096)
def _decode_date(raw: str) -> date:
    return date.fromisoformat(raw)


# Values arrive as str (the reading connection decodes UTF-8 in hiredis).
DECODERS: dict[str, Callable[[str], object]] = {
    "double": float,
    "long": int,
    "date": _decode_date,
    "timestamp": _decode_timestamp,
    "string": str,
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

# KEYS[1] = projection key, KEYS[2..m+1] = devices to write, KEYS[m+2..] = devices to remove.
# ARGV = hydrated_at, ttl_ms, JSON list of the property names, JSON list of the m rows (each a list
# of encoded values, null for NULL). Returns {written, skipped, removed}, or {-1, 0, 0} when a
# newer projection has started since. One JSON argument per batch instead of one argument per
# field keeps the client's packing and the server's parsing small.
_UPSERT = """
local ts = ARGV[1]
local ttl = tonumber(ARGV[2])
local newest = redis.call('HGET', KEYS[1], 'newest_started')
if newest and newest > ts then return {-1, 0, 0} end
local names = cjson.decode(ARGV[3])
local rows = cjson.decode(ARGV[4])
local null = cjson.null
local written, skipped, removed = 0, 0, 0
for i = 2, #KEYS do
  local current = redis.call('HGET', KEYS[i], 'hydrated_at')
  if current and current > ts then
    skipped = skipped + 1
  else
    local row = rows[i - 1]
    if row == nil then
      removed = removed + redis.call('DEL', KEYS[i])
    else
      local args = {}
      for j = 1, #names do
        local v = row[j]
        if v ~= null then
          args[#args + 1] = names[j]
          args[#args + 1] = v
        end
      end
      redis.call('DEL', KEYS[i])
      redis.call('HSET', KEYS[i], unpack(args))
      redis.call('PEXPIRE', KEYS[i], ttl)
      written = written + 1
    end
  end
end
return {written, skipped, removed}
"""

# KEYS = device keys; ARGV = property names. Every device's values in one reply (one round trip,
# one consistent moment: the script runs atomically).
READ_SCRIPT = """
local out = {}
for i = 1, #KEYS do
  out[i] = redis.call('HMGET', KEYS[i], unpack(ARGV))
end
return out
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
    """Reads and writes `Device` objects of one feature set version in Redis, and models' input vectors
    of the version each model is pinned to."""

    def __init__(
        self, client: redis.Redis, feature_set_version: str = DEFAULT_FEATURE_SET_VERSION, model_versions: Mapping[str, str] | None = None
    ):
        self.client = client
        # A version typed wrong would read nothing, as if the whole fleet were offline: refused here.
        self.version = known_version(feature_set_version)
        # The version each model's vectors are served on (its pin); a model not named: this store's.
        self.model_versions = dict(model_versions or {})
        self.device = device_layout(feature_set_version)
        self.prefix = self.device.prefix
        self.projection_key = self.device.projection_key
        self._begin = client.register_script(_BEGIN)
        self._upsert = client.register_script(_UPSERT)
        self._complete = client.register_script(_COMPLETE)
        # Reads decode text in hiredis (C) rather than field by field in Python.
        self._reader = redis.Redis(
            connection_pool=redis.ConnectionPool(
                connection_class=client.connection_pool.connection_class,
                **{**client.connection_pool.connection_kwargs, "decode_responses": True},
            )
        )
        self._read = self._reader.register_script(READ_SCRIPT)
        self._layouts: dict[str | None, EntryLayout] = {None: self.device}

    def layout(self, model: str | None = None) -> EntryLayout:
        """The `Device` object's layout, or a served model's input vector's on the version it is pinned to."""
        if model not in self._layouts:
            if not isinstance(model, str):
                raise TypeError(f"model must be a model name, not {type(model).__name__}")
            version = self.model_versions.get(model, self.version)
            try:
                spec = model_spec(model, version)
            except UnknownModel as exc:
                raise UnknownModel(f"{exc}; its input vectors are served under fs:{version}:model:<name>:") from None
            if not spec.served_online:
                raise UnknownModel(f"{spec.key} is not served online")
            self._layouts[model] = model_layout(spec)
        return self._layouts[model]

    @classmethod
    def connect(
        cls, url: str | None = None, feature_set_version: str | None = None, socket_timeout: float = 2.0, model_versions: str | None = None
    ) -> OnlineStore:
        """The store at `url`, else REDIS_URL, else the embedded server `make run` started; the
        `Device` object of `feature_set_version` (else FS_FEATURE_SET_VERSION, else v1), each model's
        vectors of the version it is pinned to (`model_versions` as `model=version,...`, else
        FS_MODEL_VERSIONS, over `MODEL_PINS`)."""
        url = url or os.environ.get("REDIS_URL") or EmbeddedRedis().url()
        if url is None:
            raise OnlineStoreUnavailable(
                "no Redis to read from: set REDIS_URL, or start the embedded server (`make run`, or `python -m fs_resources.embedded_redis start`)"
            )
        client = redis.Redis.from_url(url, socket_timeout=socket_timeout, socket_connect_timeout=socket_timeout)
        version = feature_set_version or os.environ.get("FS_FEATURE_SET_VERSION") or DEFAULT_FEATURE_SET_VERSION
        pins = (
            model_pins(model_versions, setting="model_versions")
            if model_versions is not None
            else model_pins(os.environ.get(MODEL_PINS_SETTING), setting=MODEL_PINS_SETTING)
        )
        return cls(client, version, pins)

    # --- reads --------------------------------------------------------------------------------

    @staticmethod
    def _request_fields(layout: EntryLayout, properties: Sequence[str] | None) -> tuple[str, ...]:
        if properties is None:
            return layout.fields
        if isinstance(properties, str):
            raise TypeError("properties must be a list of property names, not one string")
        unknown = [p for p in properties if p not in layout.dtypes]
        if unknown:
            raise UnknownProperty(f"unknown {layout.what} fields {unknown}; known: {list(layout.fields)}")
        return tuple(properties)

    def get_online_features(
        self, device_ids: Sequence[str], properties: Sequence[str] | None = None, model: str | None = None
    ) -> list[dict | None]:
        """One dict per requested device, in order; None where the device has no live entry.

        Without `model`: the `Device` object's properties. With `model` (a model name): that
        model's latest input vector, its features in the model's order, then `window_start`,
        `window_end` (the features table's window they come from) and `hydrated_at`.
        Values are typed as in the offline store: float, int, str, `datetime.date`, aware UTC
        `datetime`; a value NULL offline is None. All devices are read in one round trip.
        """
        if isinstance(device_ids, str):
            raise TypeError("device_ids must be a list of device ids, not one string")
        layout = self.layout(model)
        fields = self._request_fields(layout, properties)
        # hydrated_at is always present in a live entry: it tells "no entry" from "all NULL".
        request = fields if "hydrated_at" in fields else (*fields, "hydrated_at")
        typed = [(f, DECODERS[layout.dtypes[f]]) for f in fields if layout.dtypes[f] != "string"]
        live = request.index("hydrated_at")
        keys = [layout.prefix + validate_device_id(d) for d in device_ids]
        if len(keys) == 1:
            replies = [self._reader.execute_command("HMGET", keys[0], *request)]
        else:
            # A script blocks every other client while it runs: bounded chunks keep a large request
            # from stalling the reads of everyone else (each chunk is still one round trip).
            replies = []
            for start in range(0, len(keys), READ_CHUNK_KEYS):
                replies += self._read(keys=keys[start : start + READ_CHUNK_KEYS], args=request, client=self._reader)
        out: list[dict | None] = []
        for values in replies:
            if values[live] is None:
                out.append(None)
                continue
            row = dict(zip(fields, values))
            for name, decode in typed:
                value = row[name]
                if value is not None:
                    row[name] = decode(value)
            out.append(row)
        return out

    def live_device_ids(self, model: str | None = None) -> set[str]:
        """Every device with a live entry (one SCAN over the entry's key prefix)."""
        prefix = self.layout(model).prefix
        start = len(prefix)
        return {key[start:].decode() for key in self.client.scan_iter(match=prefix + "*", count=1000)}

    def projection_state(self, model: str | None = None) -> ProjectionState | None:
        raw = self.client.hgetall(self.layout(model).projection_key)
        if not raw:
            return None

        def ts(name: bytes) -> datetime | None:
            return _decode_timestamp(raw[name].decode()) if name in raw else None

        return ProjectionState(
            hydrated_at=ts(b"hydrated_at"),
            newest_started=ts(b"newest_started"),
            live_devices=int(raw[b"live_devices"]) if b"live_devices" in raw else None,
            source=raw[b"source"].decode() if b"source" in raw else None,
        )

    # --- writes -------------------------------------------------------------------------------

    def encode_objects(self, objects: pa.Table | dict[str, list], model: str | None = None) -> tuple[list[str], list[tuple], list[str]]:
        """Served device ids, their rows of encoded values (None for NULL, in the layout's order),
        and the ids to remove (retired). `objects` is an Arrow table of `DEVICE`'s properties (as
        read from `device_objects`) or of a model's vector columns and `device_id`, or a dict of
        row-aligned value lists of `DEVICE`'s properties."""
        layout = self.layout(model)
        table = objects if isinstance(objects, pa.Table) else arrow_objects(objects)
        missing = [p for p in layout.fields if p not in table.column_names]
        if missing:
            raise ValueError(f"{layout.what} rows lack fields {missing}")
        ids = table.column(DEVICE.primary_key).to_pylist()
        bad = [d for d in ids if not (isinstance(d, str) and DEVICE_ID_PATTERN.fullmatch(d))]
        if bad:
            raise InvalidDeviceId(f"{len(bad)} device ids are not valid keys, e.g. {bad[:5]}; nothing was written")
        encoded = []
        for name in layout.fields:
            dtype = layout.dtypes[name]
            column = table.column(name).combine_chunks()
            if dtype == "string":
                encoded.append(column.to_pylist())
            elif dtype in ("date", "timestamp"):
                # Few distinct values (one hydration time, a few window ends): encode each once,
                # without making a Python datetime per row.
                codes = column.dictionary_encode()
                encode = ENCODERS[dtype]
                labels = pa.array([encode(v) for v in codes.dictionary.to_pylist()], pa.string())
                encoded.append(labels.take(codes.indices).to_pylist())
            else:
                encode = ENCODERS[dtype]
                encoded.append([None if v is None else encode(v) for v in column.to_pylist()])
        rows = list(zip(*encoded))
        if layout.status_field is None:
            return ids, rows, []
        served_mask = [status in SERVED_STATUSES for status in table.column(layout.status_field).to_pylist()]
        served = [d for d, keep in zip(ids, served_mask) if keep]
        retired = [d for d, keep in zip(ids, served_mask) if not keep]
        return served, [r for r, keep in zip(rows, served_mask) if keep], retired

    def project(
        self,
        objects: pa.Table | dict[str, list],
        hydrated_at: datetime,
        *,
        ttl_seconds: int = DEFAULT_TTL_SECONDS,
        source: str = "",
        batch_size: int = 50,
        batches_per_round_trip: int = 80,
        retries: int = 3,
        backoff_seconds: float = 0.5,
        on_batch: Callable[[int, int], None] | None = None,
        log: Callable[[str], None] = lambda message: None,
        model: str | None = None,
    ) -> ProjectionReport:
        """Write every served device, remove retired and unknown ones; the newest snapshot wins.

        `model` projects that model's input vectors (rows of its vector columns) instead of
        `Device` objects; a device without a row loses its vector.

        Each upsert script covers `batch_size` devices and `batches_per_round_trip` scripts share
        one round trip. Redis runs one script at a time, so a read arriving meanwhile waits for
        the running one: at 50 devices a script holds the server under 1 ms (500 held it about
        8 ms, a 100-device read's p99 during a pre-hydration twice the 10 ms target), and 80 of
        them per round trip keep the pre-hydration as fast (`bench/online_bench.py`).

        A connection failure is retried `retries` times with doubling backoff, then raises
        `OnlineStoreUnavailable`; the projection state is only marked complete at the end, so the
        lag check keeps reporting the last complete projection.
        """
        started = time.monotonic()
        ts = encode_timestamp(hydrated_at)
        report = ProjectionReport(hydrated_at=ts)
        layout = self.layout(model)
        served, payloads, retired = self.encode_objects(objects, model)
        call = _Retrying(self.client, retries, backoff_seconds, log, report)
        prefix, state_key = layout.prefix, layout.projection_key

        if not call(lambda pipe: self._begin(keys=[state_key], args=[ts], client=pipe))[0]:
            report.superseded = True
            report.notes.append("a newer projection had already started; nothing written")
            return report

        ttl_ms = str(int(ttl_seconds * 1000))
        names = json.dumps(layout.fields)
        work = [(d, r) for d, r in zip(served, payloads)] + [(d, None) for d in retired]
        total = len(work)
        step = batch_size * batches_per_round_trip
        for offset in range(0, total, step):
            chunk = work[offset : offset + step]
            batches = [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
            # Writes first, removals after them: the script tells them apart by position.
            calls = []
            for batch in batches:
                writes = [(d, r) for d, r in batch if r is not None]
                removals = [d for d, r in batch if r is None]
                keys = [state_key] + [prefix + d for d, _ in writes] + [prefix + d for d in removals]
                calls.append((keys, [ts, ttl_ms, names, json.dumps([r for _, r in writes])]))

            def send(pipe, calls=calls):
                for keys, args in calls:
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
        orphans = sorted(call.read(lambda: self.live_device_ids(model)) - known)
        for start in range(0, len(orphans), batch_size):
            batch = orphans[start : start + batch_size]
            keys = [state_key] + [prefix + d for d in batch]
            args = [ts, ttl_ms, names, "[]"]
            (result,) = call(lambda pipe, keys=keys, args=args: self._upsert(keys=keys, args=args, client=pipe))
            report.orphans_removed += result[2]

        report.live_devices = len(served)
        completed = encode_timestamp(datetime.now(UTC))
        call(lambda pipe: self._complete(keys=[state_key], args=[ts, len(served), completed, source], client=pipe))
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
        """`fn()`, tried again with exponential backoff while Redis is unreachable or slow."""
        transient = (redis.ConnectionError, redis.TimeoutError)

        def before_sleep(state: tenacity.RetryCallState) -> None:
            self.report.retries += 1
            error = state.outcome.exception() if state.outcome else None
            pause = state.next_action.sleep if state.next_action else 0.0
            self.log(f"Redis call failed ({type(error).__name__}); retry {state.attempt_number}/{self.retries} in {pause:.1f} s")

        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(transient),
            stop=tenacity.stop_after_attempt(self.retries + 1),
            wait=tenacity.wait_exponential(multiplier=self.backoff),
            before_sleep=before_sleep,
            reraise=True,
        )
        try:
            return retrying(fn)
        except transient as exc:
            raise OnlineStoreUnavailable(
                f"Redis unreachable after {self.retries + 1} attempts ({type(exc).__name__}: {redact(str(exc))}); "
                "devices written before the failure are complete and newer, every other entry is unchanged; "
                "the next run completes the projection"
            ) from exc


ARROW_TYPES = {
    "string": pa.string(),
    "double": pa.float64(),
    "long": pa.int64(),
    "date": pa.date32(),
    "timestamp": pa.timestamp("us", tz="UTC"),
}


def arrow_objects(columns: dict[str, list]) -> pa.Table:
    """`DEVICE` objects as an Arrow table, from row-aligned value lists (None for NULL)."""
    return pa.table({p.name: pa.array(columns[p.name], ARROW_TYPES[p.dtype]) for p in DEVICE.properties})
