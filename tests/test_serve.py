"""`fs-serve` over real HTTP and a real Redis: objects and vectors as JSON, keys, limits, errors, probes."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta

import dagster as dg
import pandas as pd
import pyarrow as pa
import pytest
import redis
import uvicorn

from fs_domain.models import model_spec, vector_columns
from fs_resources.online import ARROW_TYPES, OnlineStore, UnknownFeatureSetVersion
from fs_resources.serving.app import FeatureServer, create_app
from fs_resources.serving.keys import ApiKeys
from fs_resources.serving.limits import MAX_DEVICES
from tests.conftest import own_database
from tests.test_online_reads import HYDRATED_AT, _objects

pytestmark = pytest.mark.integration

KEY = "k-" + "a" * 30
MODEL = "device_health_1d"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Served:
    """A uvicorn server in a thread of the test's process, on a free loopback port."""

    def __init__(self, server: FeatureServer):
        self.port = _free_port()
        self.uvicorn = uvicorn.Server(
            uvicorn.Config(create_app(server), host="127.0.0.1", port=self.port, log_level="warning", loop="asyncio")
        )
        self.thread = threading.Thread(target=self.uvicorn.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.uvicorn.started:
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.05)

    def call(self, path: str, body: object | None = None, key: str | None = KEY, raw: bytes | None = None) -> tuple[int, dict, dict]:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data, method="POST" if data is not None else "GET")
        request.add_header("Content-Type", "application/json")
        if key is not None:
            request.add_header("Authorization", f"Bearer {key}")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                text = response.read()
                return (
                    response.status,
                    (json.loads(text) if response.headers.get_content_type() == "application/json" else {"text": text.decode()}),
                    dict(response.headers),
                )
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read()), dict(error.headers)

    def stop(self) -> None:
        self.uvicorn.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture
def url(redis_server):
    with own_database(redis_server, 8) as url:
        yield url


@pytest.fixture
def keys_file(tmp_path):
    path = tmp_path / "api_keys"
    path.write_text(f"# one key a line\napp-one {KEY}\n")
    return path


@pytest.fixture
def served(url, keys_file):
    store = OnlineStore(redis.Redis.from_url(url), "v1")
    keys = ApiKeys.from_environment({"FS_SERVE_API_KEYS_FILE": str(keys_file)})
    server = Served(FeatureServer(store, url, keys))
    yield store, server
    server.stop()


def _vectors(ids: list[str]) -> pa.Table:
    """The model's vector rows: every feature set for the first device, every one NULL for the others."""
    spec = model_spec(MODEL, "v1")
    columns: dict[str, pa.Array] = {"device_id": pa.array(ids)}
    for i, (name, dtype) in enumerate(vector_columns(spec)):
        if dtype == "timestamp":
            columns[name] = pa.array([HYDRATED_AT] * len(ids), ARROW_TYPES[dtype])
        else:
            columns[name] = pa.array([float(i) + 0.5 if n == 0 else None for n in range(len(ids))], ARROW_TYPES[dtype])
    return pa.table(columns)


def test_devices_come_back_typed_in_order_with_their_status_and_projection(served):
    store, server = served
    store.project(_objects(["dev-1", "dev-2"]), HYDRATED_AT, ttl_seconds=600)
    status, body, _ = server.call("/v1/devices:get", {"device_ids": ["dev-2", "dev-missing", "dev-1"]})
    assert status == 200, body
    assert body["feature_set_version"] == "v1" and body["projection"]["live_devices"] == 2
    assert [(d["device_id"], d["status"]) for d in body["devices"]] == [
        ("dev-2", "present"),
        ("dev-missing", "absent"),
        ("dev-1", "present"),
    ]
    first = body["devices"][2]["properties"]
    assert first["avg_temperature_evaporator_24h"] == -20.0 and first["reading_count_24h"] == 1440
    assert first["latest_anomaly_score"] is None and first["install_date"] == "2020-01-01"
    assert datetime.fromisoformat(first["hydrated_at"]) == HYDRATED_AT
    assert body["devices"][1]["properties"] is None

    status, body, _ = server.call("/v1/devices:get", {"device_ids": ["dev-1"], "properties": ["status", "latest_anomaly_score"]})
    assert status == 200 and body["devices"][0]["properties"] == {"status": "active", "latest_anomaly_score": None}


def test_a_models_vectors_follow_its_feature_order_and_feasts_request_shape_is_accepted(served):
    store, server = served
    store.project(_vectors(["dev-1", "dev-2"]), HYDRATED_AT, ttl_seconds=600, model=MODEL)
    features = list(model_spec(MODEL, "v1").features)
    status, body, _ = server.call(f"/v1/models/{MODEL}:get", {"device_ids": ["dev-1", "dev-2", "dev-3"]})
    assert status == 200, body
    assert body["features"] == features and body["feature_set_version"] == "v1"
    one = body["vectors"][0]
    assert one["status"] == "present" and one["values"][0] is not None and len(one["values"]) == len(features)
    assert body["vectors"][1]["values"] == [None] * len(features)  # every value NULL offline
    assert body["vectors"][2] == {"device_id": "dev-3", "status": "absent", "values": None}

    feast = {"entities": {"device_id": ["dev-1"]}, "features": [f"{MODEL}:{features[1]}", features[0]]}
    status, body, _ = server.call(f"/v1/models/{MODEL}:get", feast)
    assert status == 200 and body["features"] == [features[1], features[0]]
    assert body["vectors"][0]["values"] == [one["values"][1], one["values"][0]]


def test_keys_are_required_checked_and_revoked_without_a_restart(served, keys_file):
    _, server = served
    ask = {"device_ids": ["dev-1"]}
    status, body, headers = server.call("/v1/devices:get", ask, key=None)
    assert status == 401 and headers.get("www-authenticate", headers.get("WWW-Authenticate")) == "Bearer"
    wrong = server.call("/v1/devices:get", ask, key="not-a-key")
    assert wrong[0] == 403 and wrong[1]["error"]["message"] == "not authorized"
    assert server.call("/v1/devices:get", ask)[0] == 200
    keys_file.write_text("# revoked\n")
    time.sleep(1.2)
    revoked = server.call("/v1/devices:get", ask)
    assert revoked[0] == 403 and revoked[1] == wrong[1], "a revoked key is told apart from an unknown one"
    assert server.call("/healthz", key=None)[0] == 200


def test_bad_requests_get_a_4xx_naming_the_field(served):
    _, server = served
    cases = [
        ({"device_ids": ["dev-1", "no spaces"]}, 400, "device_ids[1]"),
        ({"device_ids": []}, 400, "device_ids"),
        ({"ids": ["dev-1"]}, 400, "device_ids"),
        ({"device_ids": ["dev-1"], "properties": ["colour"]}, 400, "properties"),
        ({"device_ids": [f"dev-{i}" for i in range(MAX_DEVICES + 1)]}, 413, "device_ids"),
    ]
    for body, status, field in cases:
        got = server.call("/v1/devices:get", body)
        assert (got[0], got[1]["error"]["field"]) == (status, field), (body, got)
    assert server.call("/v1/devices:get", raw=b"{not json")[0] == 400
    assert server.call("/v1/devices:get", raw=b"[" + b" " * 300_000 + b"]")[0] == 413
    unknown = server.call("/v1/models/no_such_model:get", {"device_ids": ["dev-1"]})
    assert unknown[0] == 404 and MODEL in unknown[1]["error"]["message"]
    assert server.call(f"/v1/models/{MODEL}:get", {"device_ids": ["dev-1"], "features": ["colour"]})[0] == 400
    wrong_method = server.call("/v1/devices:get")
    assert wrong_method[0] == 405 and wrong_method[2]["allow"] == "POST" and "POST" in wrong_method[1]["error"]["message"]
    assert server.call("/v1/device:get", {"device_ids": ["dev-1"]})[0] == 404
    assert server.call(f"/v1/models/{MODEL}/x:get", {"device_ids": ["dev-1"]})[0] == 404


def test_a_fault_of_the_server_is_a_json_500_counted_and_the_next_request_is_served(served, monkeypatch):
    store, server = served
    store.project(_objects(["dev-1"]), HYDRATED_AT, ttl_seconds=600)
    layout = store.layout

    def broken(model=None):
        raise RuntimeError("a bug")

    monkeypatch.setattr(store, "layout", broken)
    status, body, _ = server.call("/v1/devices:get", {"device_ids": ["dev-1"]})
    assert status == 500 and "log" in body["error"]["message"] and "a bug" not in body["error"]["message"]
    monkeypatch.setattr(store, "layout", layout)
    assert server.call("/v1/devices:get", {"device_ids": ["dev-1"]})[1]["devices"][0]["status"] == "present"
    assert 'fs_serve_requests_total{route="devices",status="500"} 1.0' in server.call("/metrics", key=None)[1]["text"]


def test_probes_metrics_and_the_openapi_document(served):
    store, server = served
    assert server.call("/healthz", key=None)[0] == 200
    with urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{server.port}/healthz", method="HEAD"), timeout=10) as head:
        assert head.status == 200 and head.read() == b"" and int(head.headers["content-length"]) > 0
    status, body, _ = server.call("/readyz", key=None)
    assert status == 503 and "no complete projection" in body["reason"]
    store.project(_objects(["dev-1"]), HYDRATED_AT, ttl_seconds=600)
    status, body, _ = server.call("/readyz", key=None)
    assert status == 200 and body["projection"]["age_seconds"] < 60
    server.call("/v1/devices:get", {"device_ids": ["dev-1"]})
    metrics = server.call("/metrics", key=None)[1]["text"]
    assert 'fs_serve_requests_total{route="devices",status="200"}' in metrics and "fs_serve_request_seconds_bucket" in metrics
    document = server.call("/openapi.json", key=None)[1]
    assert set(document["paths"]) >= {"/v1/devices:get", "/v1/models/{model}:get", "/readyz"}
    properties = document["paths"]["/v1/devices:get"]["post"]["requestBody"]["content"]["application/json"]["schema"]["properties"]
    assert "avg_temperature_evaporator_24h" in properties["properties"]["items"]["enum"]


def test_a_stale_store_says_expired_and_redis_down_is_a_503_with_a_retry_hint(url, keys_file):
    store = OnlineStore(redis.Redis.from_url(url), "v1")
    store.project(_objects(["dev-1"]), HYDRATED_AT, ttl_seconds=600)
    # The last projection completed long ago: its entries have outlived their time to live.
    store.client.hset(store.projection_key, "completed_at", (datetime.now(UTC) - timedelta(hours=3)).isoformat())
    keys = ApiKeys.from_environment({"FS_SERVE_API_KEYS_FILE": str(keys_file)})
    server = Served(FeatureServer(store, url, keys, ttl_seconds=7200))
    try:
        assert server.call("/v1/devices:get", {"device_ids": ["dev-gone"]})[1]["devices"][0]["status"] == "expired"
    finally:
        server.stop()
    # Nothing listens on this port: every read fails fast.
    dead = f"redis://127.0.0.1:{_free_port()}/0"
    server = Served(FeatureServer(OnlineStore(redis.Redis.from_url(dead), "v1"), dead, keys, timeout=0.3))
    try:
        started = time.monotonic()
        status, body, headers = server.call("/v1/devices:get", {"device_ids": ["dev-1"]})
        assert status == 503 and headers.get("retry-after", headers.get("Retry-After")) == "5" and "unreachable" in body["error"]["message"]
        assert time.monotonic() - started < 3
        assert server.call("/readyz", key=None)[0] == 503
        assert "fs_serve_redis_errors_total 2.0" in server.call("/metrics", key=None)[1]["text"]
    finally:
        server.stop()


def test_a_redis_that_hangs_gets_a_503_within_the_timeout_and_the_server_keeps_serving(url, keys_file):
    """A Redis that accepts the connection and never answers (a stuck server, a half-open link): each
    request is answered 503 once its deadline passes, and the server goes on answering the next."""
    store = OnlineStore(redis.Redis.from_url(url), "v1")
    keys = ApiKeys.from_environment({"FS_SERVE_API_KEYS_FILE": str(keys_file)})
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        hung = f"redis://127.0.0.1:{silent.getsockname()[1]}/0"
        server = Served(FeatureServer(store, hung, keys, timeout=0.3))
        try:
            for _ in range(2):
                started = time.monotonic()
                status, body, headers = server.call("/v1/devices:get", {"device_ids": ["dev-1"]})
                waited = time.monotonic() - started
                assert status == 503 and "TimeoutError" in body["error"]["message"], body
                assert headers.get("retry-after", headers.get("Retry-After")) == "5" and 0.3 <= waited < 2, waited
            assert server.call("/healthz", key=None)[0] == 200
            assert "fs_serve_redis_errors_total 2.0" in server.call("/metrics", key=None)[1]["text"]
        finally:
            server.stop()


def test_an_unknown_feature_set_version_is_refused_naming_the_known_ones(url):
    with pytest.raises(UnknownFeatureSetVersion, match=r"'v1 '.*known: \['v1', 'v2'\]"):
        OnlineStore(redis.Redis.from_url(url), "v1 ")


def test_served_values_are_logged_and_the_skew_check_finds_the_one_that_differs(spark, resources, data_root, url, keys_file, instance):
    """What fs-serve answered, logged by its background writer, against the offline features of the same window."""
    from fs_assets.ontology.assets import ontology_assets
    from fs_checks.online_checks import CHECK_SERVED_SKEW, ONLINE_STORE, check_served_value_skew
    from fs_domain.tables import SERVED_VALUES_TABLE, features_table
    from fs_resources import settings
    from fs_resources.feature_store import FeatureStoreResource
    from fs_resources.serving.served_log import ServedValueLog, served_values_path

    spec = model_spec(MODEL, "v1")
    features = list(spec.features)
    end = datetime(2026, 1, 7, tzinfo=UTC)
    offline = pd.DataFrame(
        {
            "device_id": ["dev-1", "dev-2"],
            "window_start": [end - timedelta(days=1)] * 2,
            "window_end": [end] * 2,
            "window_date": [(end - timedelta(days=1)).date()] * 2,
            "window_duration_minutes": [spec.window_minutes] * 2,
            **{f: [float(i), float(i) + 1.0] for i, f in enumerate(features)},  # whole numbers: some columns are long
        }
    )
    spark.createDataFrame(offline).write.format("delta").save(resources["delta"].path(features_table("v1")))
    served = offline.copy()
    served.loc[1, features[2]] += 0.5  # what Redis serves for dev-2 drifted from its window's offline value
    vectors = pa.Table.from_pandas(served[["device_id", "window_start", "window_end", *features]], preserve_index=False)
    vectors = vectors.append_column("hydrated_at", pa.array([HYDRATED_AT] * 2, pa.timestamp("us", tz="UTC")))
    store = OnlineStore(redis.Redis.from_url(url), "v1")
    store.project(vectors, HYDRATED_AT, ttl_seconds=600, model=MODEL)

    log = ServedValueLog(served_values_path(settings.tables_root()), share=1.0, flush_seconds=0.2)
    keys = ApiKeys.from_environment({"FS_SERVE_API_KEYS_FILE": str(keys_file)})
    server = Served(FeatureServer(store, url, keys, log=log))
    try:
        status, body, _ = server.call(f"/v1/models/{MODEL}:get", {"device_ids": ["dev-1", "dev-2", "dev-3"]})
        assert status == 200 and body["vectors"][1]["values"][2] == 3.5
    finally:
        server.stop()
    assert log.written == 2 * len(features) and log.dropped == 0
    logged = resources["delta"].read(SERVED_VALUES_TABLE)
    assert logged.count() == 2 * len(features) and {r["entry"] for r in logged.select("entry").distinct().collect()} == {MODEL}

    defs = dg.Definitions(
        assets=ontology_assets,
        asset_checks=[check_served_value_skew],
        jobs=[dg.define_asset_job("skew", selection=dg.AssetSelection.checks(dg.AssetCheckKey(ONLINE_STORE, CHECK_SERVED_SKEW)))],
        resources={**resources, "feature_store": FeatureStoreResource()},
    )
    (evaluation,) = defs.resolve_job_def("skew").execute_in_process(instance=instance).get_asset_check_evaluations()
    md = {k: v.value for k, v in evaluation.metadata.items()}
    assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.WARN
    assert (md["values_compared"], md["values_differing"], md["served_without_offline_window"]) == (2 * len(features), 1, 0), [
        r.data for r in md["differences"].records
    ]
    assert md["observed"] == 1 and md["threshold"] == 0
