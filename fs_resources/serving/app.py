"""`fs-serve`: the online store over HTTP, for applications that are not Python.

    POST /v1/devices:get          {"device_ids": [...], "properties": [...]?}   -> Device objects
    POST /v1/models/{model}:get   {"device_ids": [...]} or Feast's {"entities": {"device_id": [...]}, "features": [...]}
    GET  /healthz  /readyz  /metrics  /openapi.json

Starlette on uvicorn (uvloop, httptools): the leanest ASGI stack with a production server, and
already installed with the Dagster webserver; no request model layer between the body and Redis.
Reads go through `redis.asyncio` (hiredis) with the same entries, layouts and Lua read as
`OnlineStore`: one device is one HMGET, several are one script call per 1,000 (one round trip, one
consistent moment). Values leave as Redis holds them where JSON can carry them (timestamps are
stored ISO-8601 UTC, dates ISO); numbers are parsed, NULL is null. Responses are encoded by orjson.

A device without an entry is `absent`, or `expired` when the last complete projection is older
than the entries' time to live (the store went stale rather than the device unknown).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson
import redis.asyncio as aioredis
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from fs_domain.contract import DEVICE_ID_PATTERN
from fs_domain.models import UnknownModel
from fs_resources.online import DEFAULT_TTL_SECONDS, READ_CHUNK_KEYS, READ_SCRIPT, EntryLayout, OnlineStore
from fs_resources.serving.keys import ApiKeys
from fs_resources.serving.limits import MAX_BODY_BYTES, MAX_DEVICES
from fs_resources.serving.served_log import ServedValueLog

RETRY_AFTER_SECONDS = 5
PROJECTION_CACHE_SECONDS = 1.0  # how long the projection's state is reused between requests
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0)

PARSERS: dict[str, Callable[[str], object]] = {"double": float, "long": int}


class RequestError(Exception):
    """A request the server refuses: its status, the field at fault (or None) and what is wrong."""

    def __init__(self, status: int, message: str, field: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.field, self.headers = status, message, field, headers or {}


def _json(body: object, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json", headers=headers)


def _error(exc: RequestError) -> Response:
    return _json({"error": {"status": exc.status, "field": exc.field, "message": exc.message}}, exc.status, exc.headers)


@dataclass
class Metrics:
    registry: CollectorRegistry
    requests: Counter
    latency: Histogram
    redis_errors: Counter

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

    def age_seconds(self, now: datetime) -> float | None:
        if self.completed_at is None:
            return None
        return round((now - datetime.fromisoformat(self.completed_at)).total_seconds(), 1)

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
        self.redis = aioredis.Redis.from_url(url, decode_responses=True, socket_timeout=timeout, socket_connect_timeout=timeout)
        self.read_script = self.redis.register_script(READ_SCRIPT)
        self.metrics = Metrics.create()
        self._projections: dict[str, tuple[float, Projection | None]] = {}

    # --- reading ----------------------------------------------------------------------------

    async def entries(self, layout: EntryLayout, device_ids: list[str], fields: tuple[str, ...]) -> list[list[str | None]]:
        request = fields if "hydrated_at" in fields else (*fields, "hydrated_at")
        keys = [layout.prefix + d for d in device_ids]
        if len(keys) == 1:
            replies = [await self.redis.execute_command("HMGET", keys[0], *request)]
        else:
            replies = []
            for start in range(0, len(keys), READ_CHUNK_KEYS):
                replies += await self.read_script(keys=keys[start : start + READ_CHUNK_KEYS], args=request)
        return replies

    async def projection(self, layout: EntryLayout) -> Projection | None:
        now = time.monotonic()
        cached = self._projections.get(layout.projection_key)
        if cached is not None and now - cached[0] < PROJECTION_CACHE_SECONDS:
            return cached[1]
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

    def authorize(self, request: Request) -> None:
        if self.keys is None:
            return
        header = request.headers.get("authorization")
        key = header[7:].strip() if header and header[:7].lower() == "bearer " else request.headers.get("x-api-key")
        if key is None:
            raise RequestError(
                401, "an API key is required (Authorization: Bearer <key>, or X-API-Key)", headers={"WWW-Authenticate": "Bearer"}
            )
        if not self.keys.accepts(key):
            raise RequestError(403, "not authorized")

    async def body(self, request: Request) -> dict:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            raise RequestError(413, f"the body is over {MAX_BODY_BYTES:,} bytes")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                raise RequestError(413, f"the body is over {MAX_BODY_BYTES:,} bytes")
            chunks.append(chunk)
        try:
            body = orjson.loads(b"".join(chunks))
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


def _typed(layout: EntryLayout, fields: tuple[str, ...], values: list[str | None]) -> list[object]:
    out: list[object] = []
    for name, value in zip(fields, values):
        parse = PARSERS.get(layout.dtypes[name])
        out.append(parse(value) if parse is not None and value is not None else value)
    return out


def create_app(server: FeatureServer) -> Starlette:
    store = server.store

    def route(name: str, authorized: bool = True):
        """Times and counts a handler, turns its refusals into JSON errors and Redis faults into 503."""

        def wrap(handler: Callable[[Request], Awaitable[Response]]):
            async def endpoint(request: Request) -> Response:
                started = time.perf_counter()
                try:
                    if authorized:
                        server.authorize(request)
                    response = await handler(request)
                except RequestError as exc:
                    response = _error(exc)
                except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                    server.metrics.redis_errors.inc()
                    response = _error(
                        RequestError(
                            503,
                            f"the online store is unreachable ({type(exc).__name__}); retry later",
                            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
                        )
                    )
                except RedisError as exc:
                    server.metrics.redis_errors.inc()
                    response = _error(
                        RequestError(503, f"the online store failed the read: {exc}", headers={"Retry-After": str(RETRY_AFTER_SECONDS)})
                    )
                server.metrics.latency.labels(name).observe(time.perf_counter() - started)
                server.metrics.requests.labels(name, str(response.status_code)).inc()
                return response

            return endpoint

        return wrap

    @route("devices")
    async def devices(request: Request) -> Response:
        body = await server.body(request)
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

    @route("models")
    async def models(request: Request) -> Response:
        name = request.path_params["model"]
        try:
            layout = store.layout(name)
        except (UnknownModel, TypeError) as exc:
            raise RequestError(404, str(exc), "model") from None
        body = await server.body(request)
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

    @route("healthz", authorized=False)
    async def healthz(request: Request) -> Response:
        return _json({"status": "ok"})

    @route("readyz", authorized=False)
    async def readyz(request: Request) -> Response:
        layout = store.layout()
        await server.redis.ping()
        server._projections.pop(layout.projection_key, None)
        projection = await server.projection(layout)
        now = datetime.now(UTC)
        if projection is None or projection.completed_at is None:
            return _json({"ready": False, "redis": "ok", "reason": f"no complete projection of {layout.feature_set_version} in Redis"}, 503)
        return _json(
            {"ready": True, "redis": "ok", "feature_set_version": layout.feature_set_version, "projection": projection.as_json(now)}
        )

    @route("metrics", authorized=False)
    async def metrics(request: Request) -> Response:
        return Response(generate_latest(server.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @route("openapi", authorized=False)
    async def openapi(request: Request) -> Response:
        from fs_resources.serving.openapi import document

        return _json(document(store))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        if server.log is not None:
            server.log.start()
        yield
        await server.redis.aclose()
        if server.log is not None:
            server.log.close()

    return Starlette(
        routes=[
            Route("/v1/devices:get", devices, methods=["POST"]),
            Route("/v1/models/{model}:get", models, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
            Route("/openapi.json", openapi, methods=["GET"]),
        ],
        lifespan=lifespan,
    )
