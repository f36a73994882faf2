"""`fs-serve`: the online store over HTTP, for applications that are not Python.

    POST /v1/devices:get          {"device_ids": [...], "properties": [...]?}   -> Device objects
    POST /v1/models/{model}:get   {"device_ids": [...]} or Feast's {"entities": {"device_id": [...]}, "features": [...]}
    GET  /healthz  /readyz  /metrics  /openapi.json

A bare ASGI application on uvicorn (uvloop, httptools), the production server: six fixed routes
need no framework, and a framework's layers (middleware, route matching, request objects) cost
more than the work of a one-device read (bench/results/serve.json). Reads go through
`redis.asyncio` (hiredis) with the same entries, layouts and Lua read as `OnlineStore`: one device
is one HMGET, several are one script call per 1,000 (one round trip, one consistent moment).
Values leave as Redis holds them where JSON can carry them (timestamps are stored ISO-8601 UTC,
dates ISO); numbers are parsed, NULL is null. Responses are encoded by orjson.

A device without an entry is `absent`, or `expired` when the last complete projection is older
than the entries' time to live (the store went stale rather than the device unknown).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import orjson
import redis.asyncio as aioredis
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from fs_domain.contract import DEVICE_ID_PATTERN
from fs_domain.models import UnknownModel
from fs_resources.online import DEFAULT_TTL_SECONDS, READ_CHUNK_KEYS, READ_SCRIPT, EntryLayout, OnlineStore
from fs_resources.serving.keys import ApiKeys
from fs_resources.serving.limits import DEVICES_PATH, MAX_BODY_BYTES, MAX_DEVICES, MODELS_PREFIX, MODELS_SUFFIX
from fs_resources.serving.served_log import ServedValueLog

ASGIApp = Callable[[dict, Callable[[], Awaitable[dict]], Callable[[dict], Awaitable[None]]], Awaitable[None]]

LOGGER = logging.getLogger("fs_serve")
RETRY_AFTER_SECONDS = 5
PROJECTION_CACHE_SECONDS = 1.0  # how long the projection's state is reused between requests
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0)

PARSERS: dict[str, Callable[[str], object]] = {"double": float, "long": int}


class ClientGone(Exception):
    """The client closed the connection before its request's body arrived: nobody to answer."""


class RequestError(Exception):
    """A request the server refuses: its status, the field at fault (or None) and what is wrong."""

    def __init__(self, status: int, message: str, field: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.field, self.headers = status, message, field, headers or {}


@dataclass(slots=True)
class Reply:
    """What a route answers: the encoded body, its status, type and any further headers."""

    body: bytes
    status: int = 200
    content_type: bytes = b"application/json"
    headers: dict[str, str] | None = None


def _json(body: object, status: int = 200, headers: dict[str, str] | None = None) -> Reply:
    return Reply(orjson.dumps(body), status, headers=headers)


def _error(exc: RequestError) -> Reply:
    return _json({"error": {"status": exc.status, "field": exc.field, "message": exc.message}}, exc.status, exc.headers)


@dataclass(slots=True)
class Call:
    """One HTTP request as the routes see it: its headers (names lower-case), the path's model, and
    the ASGI channel its body arrives on."""

    headers: dict[bytes, bytes]
    receive: Callable[[], Awaitable[dict]]
    model: str | None = None


@dataclass
class Metrics:
    registry: CollectorRegistry
    requests: Counter
    latency: Histogram
    redis_errors: Counter
    _children: dict[tuple[str, int], tuple[Histogram, Counter]] = field(default_factory=dict)

    def record(self, route: str, status: int, seconds: float) -> None:
        """Count one answer and its time (each label's child looked up once, not on every request)."""
        children = self._children.get((route, status))
        if children is None:
            children = self._children[(route, status)] = (self.latency.labels(route), self.requests.labels(route, str(status)))
        children[0].observe(seconds)
        children[1].inc()

    @classmethod
    def create(cls) -> Metrics:
        registry = CollectorRegistry()
        return cls(
            registry,
            Counter("fs_serve_requests", "Requests by route and status.", ["route", "status"], registry=registry),
            Histogram("fs_serve_request_seconds", "Time to answer, by route.", ["route"], buckets=LATENCY_BUCKETS, registry=registry),
            Counter("fs_serve_redis_errors", "Requests that met Redis unreachable or too slow.", registry=registry),
        )


@dataclass
class Projection:
    hydrated_at: str | None
    completed_at: str | None
    live_devices: int | None
    _completed: datetime | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self._completed = datetime.fromisoformat(self.completed_at) if self.completed_at is not None else None

    def age_seconds(self, now: datetime) -> float | None:
        if self._completed is None:
            return None
        return round((now - self._completed).total_seconds(), 1)

    def as_json(self, now: datetime) -> dict:
        return {
            "hydrated_at": self.hydrated_at,
            "completed_at": self.completed_at,
            "age_seconds": self.age_seconds(now),
            "live_devices": self.live_devices,
        }


class FeatureServer:
    """The state behind the routes: the store's layouts, an async Redis client, keys and metrics."""

    def __init__(
        self,
        store: OnlineStore,
        url: str,
        keys: ApiKeys | None,
        ttl_seconds: int = DEFAULT_TTL_SECONDS,
        timeout: float = 0.5,
        log: ServedValueLog | None = None,
    ):
        self.store, self.keys, self.ttl_seconds, self.log = store, keys, ttl_seconds, log
        # One deadline over each of a request's Redis calls (`deadline()`: in `entries`, `projection`
        # and the readiness probe) instead of redis-py's on every socket operation (5 s unless told):
        # its write timeout starts a task for every command. A call cut short closes its connection
        # (redis-py drops a connection whose command was interrupted), so no later request reads its
        # late answer.
        self.timeout = timeout
        self.redis = aioredis.Redis.from_url(url, decode_responses=True, socket_timeout=None, socket_connect_timeout=timeout)
        self.read_script = self.redis.register_script(READ_SCRIPT)
        self.metrics = Metrics.create()
        self._projections: dict[str, tuple[float, Projection | None]] = {}

    # --- reading ----------------------------------------------------------------------------

    def deadline(self) -> asyncio.Timeout:
        """The bound on one Redis call of a request; past it the call is cut short (a 503)."""
        return asyncio.timeout(self.timeout)

    async def entries(self, layout: EntryLayout, device_ids: list[str], fields: tuple[str, ...]) -> list[list[str | None]]:
        request = fields if "hydrated_at" in fields else (*fields, "hydrated_at")
        keys = [layout.prefix + d for d in device_ids]
        async with self.deadline():
            if len(keys) == 1:
                return [await self.redis.execute_command("HMGET", keys[0], *request)]
            replies = []
            for start in range(0, len(keys), READ_CHUNK_KEYS):
                replies += await self.read_script(keys=keys[start : start + READ_CHUNK_KEYS], args=request)
            return replies

    async def projection(self, layout: EntryLayout) -> Projection | None:
        now = time.monotonic()
        cached = self._projections.get(layout.projection_key)
        if cached is not None and now - cached[0] < PROJECTION_CACHE_SECONDS:
            return cached[1]
        async with self.deadline():
            raw = await self.redis.hgetall(layout.projection_key)
        state = (
            Projection(raw.get("hydrated_at"), raw.get("completed_at"), int(raw["live_devices"]) if "live_devices" in raw else None)
            if raw
            else None
        )
        self._projections[layout.projection_key] = (now, state)
        return state

    def missing_status(self, projection: Projection | None, now: datetime) -> str:
        age = projection.age_seconds(now) if projection else None
        return "expired" if age is not None and age > self.ttl_seconds else "absent"

    # --- requests ---------------------------------------------------------------------------

    def authorize(self, call: Call) -> None:
        if self.keys is None:
            return
        header = call.headers.get(b"authorization")
        if header is not None and header[:7].lower() == b"bearer ":
            key: str | None = header[7:].strip().decode("latin-1")
        else:
            raw = call.headers.get(b"x-api-key")
            key = raw.decode("latin-1") if raw is not None else None
        if key is None:
            raise RequestError(
                401, "an API key is required (Authorization: Bearer <key>, or X-API-Key)", headers={"WWW-Authenticate": "Bearer"}
            )
        if not self.keys.accepts(key):
            raise RequestError(403, "not authorized")

    async def body(self, call: Call) -> dict:
        declared = call.headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            raise RequestError(413, f"the body is over {MAX_BODY_BYTES:,} bytes")
        chunks, size = [], 0
        while True:
            message = await call.receive()
            if message["type"] == "http.disconnect":
                raise ClientGone
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                raise RequestError(413, f"the body is over {MAX_BODY_BYTES:,} bytes")
            chunks.append(chunk)
            if not message.get("more_body"):
                break
        try:
            body = orjson.loads(chunks[0] if len(chunks) == 1 else b"".join(chunks))
        except orjson.JSONDecodeError as exc:
            raise RequestError(400, f"the body is not JSON: {exc}") from None
        if not isinstance(body, dict):
            raise RequestError(400, "the body must be a JSON object")
        return body


def _device_ids(body: dict) -> list[str]:
    if "device_ids" in body:
        ids, name = body["device_ids"], "device_ids"
    elif isinstance(body.get("entities"), dict) and "device_id" in body["entities"]:
        ids, name = body["entities"]["device_id"], "entities.device_id"
    else:
        raise RequestError(400, "give the devices as device_ids (a list), or entities.device_id", "device_ids")
    if not isinstance(ids, list) or not ids:
        raise RequestError(400, "must be a non-empty list of device ids", name)
    if len(ids) > MAX_DEVICES:
        raise RequestError(413, f"{len(ids):,} devices asked; at most {MAX_DEVICES:,} a request", name)
    for i, d in enumerate(ids):
        if not isinstance(d, str) or not DEVICE_ID_PATTERN.fullmatch(d):
            raise RequestError(400, f"{d!r} is not a device id (expected a registry id such as 'dev-00042')", f"{name}[{i}]")
    return ids


def _names(body: dict, key: str, layout: EntryLayout, prefix: str | None = None) -> tuple[str, ...] | None:
    if body.get(key) is None:
        return None
    names = body[key]
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise RequestError(400, "must be a list of names", key)
    if prefix is not None:  # Feast names a feature `<view>:<feature>`
        names = [n.split(":", 1)[1] if n.startswith(prefix + ":") else n for n in names]
    unknown = [n for n in names if n not in layout.dtypes]
    if unknown:
        raise RequestError(400, f"unknown {unknown}; known: {list(layout.fields)}", key)
    return tuple(names)


_PARSERS_OF: dict[tuple[str, tuple[str, ...]], tuple[Callable[[str], object] | None, ...]] = {}


def _typed(layout: EntryLayout, fields: tuple[str, ...], values: list[str | None]) -> list[object]:
    parsers = _PARSERS_OF.get((layout.prefix, fields))
    if parsers is None:
        if len(_PARSERS_OF) > 1024:  # properties chosen per request: keep the lookup bounded
            _PARSERS_OF.clear()
        parsers = _PARSERS_OF[(layout.prefix, fields)] = tuple(PARSERS.get(layout.dtypes[name]) for name in fields)
    return [parse(value) if parse is not None and value is not None else value for parse, value in zip(parsers, values)]


@dataclass(frozen=True)
class Route:
    name: str  # its label in the metrics
    method: str
    handler: Callable[[Call], Awaitable[Reply]]
    authorized: bool = True


def create_app(server: FeatureServer) -> ASGIApp:
    store = server.store

    async def devices(call: Call) -> Reply:
        body = await server.body(call)
        layout = store.layout()
        ids = _device_ids(body)
        fields = _names(body, "properties", layout) or layout.fields
        replies = await server.entries(layout, ids, fields)
        projection = await server.projection(layout)
        now = datetime.now(UTC)
        live = len(fields) if "hydrated_at" not in fields else fields.index("hydrated_at")
        missing = server.missing_status(projection, now)
        items = []
        log = server.log if server.log is not None and server.log.sampled() else None
        for device_id, values in zip(ids, replies):
            if values[live] is None:
                items.append({"device_id": device_id, "status": missing, "properties": None})
                continue
            typed = _typed(layout, fields, values)
            items.append({"device_id": device_id, "status": "present", "properties": dict(zip(fields, typed))})
            if log is not None:
                log.record(layout.what, layout.feature_set_version, device_id, list(fields), typed)
        return _json(
            {
                "feature_set_version": layout.feature_set_version,
                "projection": projection.as_json(now) if projection else None,
                "devices": items,
            }
        )

    async def models(call: Call) -> Reply:
        name = call.model
        try:
            layout = store.layout(name)
        except (UnknownModel, TypeError) as exc:
            raise RequestError(404, str(exc), "model") from None
        body = await server.body(call)
        ids = _device_ids(body)
        features = [c for c in layout.fields if c not in ("window_start", "window_end", "hydrated_at")]
        asked = _names(body, "features", layout, prefix=name)
        features = list(asked) if asked is not None else features
        fields = (*features, "window_start", "window_end", "hydrated_at")
        replies = await server.entries(layout, ids, fields)
        projection = await server.projection(layout)
        now = datetime.now(UTC)
        missing = server.missing_status(projection, now)
        n = len(features)
        vectors = []
        log = server.log if server.log is not None and server.log.sampled() else None
        for device_id, values in zip(ids, replies):
            if values[-1] is None:
                vectors.append({"device_id": device_id, "status": missing, "values": None})
                continue
            typed = _typed(layout, fields, values)
            vectors.append(
                {
                    "device_id": device_id,
                    "status": "present",
                    "values": typed[:n],
                    "window_start": typed[n],
                    "window_end": typed[n + 1],
                    "hydrated_at": typed[n + 2],
                }
            )
            if log is not None:
                log.record(name, layout.feature_set_version, device_id, features, typed[:n], (typed[n], typed[n + 1]))
        return _json(
            {
                "model": name,
                "feature_set_version": layout.feature_set_version,
                "features": features,
                "projection": projection.as_json(now) if projection else None,
                "vectors": vectors,
            }
        )

    async def healthz(call: Call) -> Reply:
        return _json({"status": "ok"})

    async def readyz(call: Call) -> Reply:
        layout = store.layout()
        async with server.deadline():
            await server.redis.ping()
        server._projections.pop(layout.projection_key, None)
        projection = await server.projection(layout)
        now = datetime.now(UTC)
        if projection is None or projection.completed_at is None:
            return _json({"ready": False, "redis": "ok", "reason": f"no complete projection of {layout.feature_set_version} in Redis"}, 503)
        return _json(
            {"ready": True, "redis": "ok", "feature_set_version": layout.feature_set_version, "projection": projection.as_json(now)}
        )

    async def metrics(call: Call) -> Reply:
        return Reply(generate_latest(server.metrics.registry), content_type=CONTENT_TYPE_LATEST.encode())

    async def openapi(call: Call) -> Reply:
        from fs_resources.serving.openapi import document

        return _json(document(store))

    routes = {
        DEVICES_PATH: Route("devices", "POST", devices),
        "/healthz": Route("healthz", "GET", healthz, authorized=False),
        "/readyz": Route("readyz", "GET", readyz, authorized=False),
        "/metrics": Route("metrics", "GET", metrics, authorized=False),
        "/openapi.json": Route("openapi", "GET", openapi, authorized=False),
    }
    models_route = Route("models", "POST", models)

    async def answer(route: Route, call: Call) -> Reply:
        """Runs a route: its key checked, its refusals turned into JSON errors and Redis faults into 503."""
        try:
            if route.authorized:
                server.authorize(call)
            return await route.handler(call)
        except RequestError as exc:
            return _error(exc)
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:  # OSError: TimeoutError, a deadline passed
            server.metrics.redis_errors.inc()
            message = f"the online store is unreachable ({type(exc).__name__}); retry later"
            return _error(RequestError(503, message, headers={"Retry-After": str(RETRY_AFTER_SECONDS)}))
        except RedisError as exc:
            server.metrics.redis_errors.inc()
            return _error(RequestError(503, f"the online store failed the read: {exc}", headers={"Retry-After": str(RETRY_AFTER_SECONDS)}))
        except ClientGone:
            raise
        except Exception:  # noqa: BLE001 - a fault of the server's own: logged whole, answered as JSON
            LOGGER.exception("%s failed", route.name)
            return _error(RequestError(500, f"the server failed answering {route.name}; its log has the cause"))

    async def app(scope: dict, receive: Callable[[], Awaitable[dict]], send: Callable[[dict], Awaitable[None]]) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(server, receive, send)
            return
        if scope["type"] != "http":
            return  # no websockets
        started = time.perf_counter()
        path = scope["path"]
        call = Call(dict(scope["headers"]), receive)
        route = routes.get(path)
        if route is None and path.startswith(MODELS_PREFIX) and path.endswith(MODELS_SUFFIX):
            model = path[len(MODELS_PREFIX) : -len(MODELS_SUFFIX)]
            if model and "/" not in model:
                route, call.model = models_route, model
        if route is None:
            await _send(send, _error(RequestError(404, f"no route {path}; see /openapi.json")))
            return
        method = scope["method"]
        if method != route.method and not (method == "HEAD" and route.method == "GET"):
            await _send(send, _error(RequestError(405, f"{path} answers {route.method} only", headers={"Allow": route.method})))
            return
        try:
            reply = await answer(route, call)
        except ClientGone:
            return
        server.metrics.record(route.name, reply.status, time.perf_counter() - started)
        await _send(send, reply, body=method != "HEAD")

    return app


async def _send(send: Callable[[dict], Awaitable[None]], reply: Reply, body: bool = True) -> None:
    headers = [(b"content-type", reply.content_type), (b"content-length", str(len(reply.body)).encode())]
    if reply.headers:
        headers += [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in reply.headers.items()]
    await send({"type": "http.response.start", "status": reply.status, "headers": headers})
    await send({"type": "http.response.body", "body": reply.body if body else b""})


async def _lifespan(server: FeatureServer, receive: Callable[[], Awaitable[dict]], send: Callable[[dict], Awaitable[None]]) -> None:
    """The server's start and stop (ASGI lifespan): the served-value log's writer runs in between."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            try:
                if server.log is not None:
                    server.log.start()
            except Exception as exc:  # noqa: BLE001 - uvicorn reports it and does not start
                await send({"type": "lifespan.startup.failed", "message": f"the served-value log did not start: {exc}"})
                return
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await server.redis.aclose()
            if server.log is not None:
                server.log.close()
            await send({"type": "lifespan.shutdown.complete"})
            return
