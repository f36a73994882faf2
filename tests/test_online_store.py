"""The Device object and its Redis projection, on real Spark, Delta and redis-server processes."""

from __future__ import annotations

import math
import time
from datetime import date, datetime, timedelta, timezone

import dagster as dg
import pandas as pd
import pytest
from pyspark.sql import functions as F

from fs_assets.features.assets import device_features_1d as FEATURES_1D
from fs_assets.features.assets import device_features_1h as FEATURES_1H
from fs_assets.ontology.assets import device_objects, device_online_store
from fs_checks.online_checks import CHECK_KEY_COUNT, CHECK_LAG, CHECK_RECONCILIATION, CHECK_SERVED_SKEW, online_checks
from fs_domain.device import DEVICE
from fs_domain.features import FEATURES_BY_NAME
from fs_domain.models import UnknownModel, models_for
from fs_resources import settings
from fs_resources.delta import DeltaTables
from fs_resources.embedded_redis import EmbeddedRedis
from fs_resources.feature_store import FeatureStoreResource
from fs_resources.online import InvalidDeviceId, OnlineStore, OnlineStoreUnavailable, UnknownProperty, encode_timestamp
from fs_resources.redis_store import RedisResource
from fs_resources.simulator.fleet import FleetSpec, generate
from fs_resources.spark import DeltaSparkResource
from tests.conftest import SIM_START, wait_until
from tests.ingest_runs import materialize_clean_range, materialize_registry

DAYS = [(SIM_START + timedelta(days=i)).isoformat() for i in range(2)]
SILENT_DEVICE = "dev-09000"  # registered, never sent a reading


def _edit_registry(edit) -> None:
    path = settings.registry_csv_path()
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    edit(frame).to_csv(path, index=False)


def _statuses(frame: pd.DataFrame) -> pd.DataFrame:
    frame["status"] = "active"
    frame.loc[1, "status"] = "maintenance"
    frame.loc[2, "status"] = "retired"
    silent = frame.iloc[[0]].assign(device_id=SILENT_DEVICE)
    return pd.concat([frame, silent], ignore_index=True)


@pytest.fixture(scope="module")
def fleet(spark, tmp_path_factory):
    """Eight simulated devices over two days (one in maintenance, one retired, one silent), their
    1-hour and 1-day features, and a redis-server of the module's own (the tests stop and restart it; it keeps
    nothing across a restart, so a restart is the worst case: an empty store)."""
    root = tmp_path_factory.mktemp("online")
    server = EmbeddedRedis(root / "redis", persistent=False)
    url = server.start()
    with pytest.MonkeyPatch.context() as patch, dg.instance_for_test() as instance:
        patch.setenv("FS_DATA_ROOT", str(root / "data"))
        patch.delenv("REDIS_URL", raising=False)
        resources = {
            "spark": DeltaSparkResource(),
            "delta": DeltaTables(spark=DeltaSparkResource()),
            "feature_store": FeatureStoreResource(),
            "redis": RedisResource(url=url, write_retries=1),
        }
        generate(FleetSpec.clean(devices=8, start=SIM_START, days=2, seed=4), str(root / "data"))
        _edit_registry(_statuses)
        materialize_registry(resources, instance)
        assert materialize_clean_range(resources, instance, DAYS[0], DAYS[-1]).success
        assert dg.materialize(
            [FEATURES_1H, FEATURES_1D],
            resources=resources,
            instance=instance,
            tags={"dagster/asset_partition_range_start": DAYS[0], "dagster/asset_partition_range_end": DAYS[-1]},
        ).success
        yield {"resources": resources, "instance": instance, "server": server, "url": url, "root": root}
    server.stop()


def prehydrate(fleet, raise_on_error=True, **redis_overrides):
    resources = dict(fleet["resources"])
    if redis_overrides:
        resources["redis"] = RedisResource(**{"url": fleet["url"], "write_retries": 1, **redis_overrides})
    return dg.materialize(
        [device_objects, device_online_store, *online_checks],
        resources=resources,
        instance=fleet["instance"],
        raise_on_error=raise_on_error,
        run_config={"ops": {f"device_online_store_{CHECK_RECONCILIATION}": {"config": {"sample_size": 0}}}},
    )


def objects(spark) -> dict[str, dict]:
    rows = DeltaTables(spark=DeltaSparkResource()).read("device_objects/v1").toArrow().to_pylist()
    return {r["device_id"]: r for r in rows}


def store(fleet) -> OnlineStore:
    return OnlineStore.connect(fleet["url"])


def check_results(result) -> dict:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


@pytest.mark.integration
def test_device_objects_hold_registry_attributes_and_the_latest_complete_day(spark, fleet):
    result = prehydrate(fleet)
    assert result.success
    rows = objects(spark)
    registry = {r["device_id"]: r for r in DeltaTables(spark=DeltaSparkResource()).read("device_registry").toArrow().to_pylist()}
    assert set(rows) == set(registry)
    features = DeltaTables(spark=DeltaSparkResource()).read("device_features/v1").where(F.col("window_duration_minutes") == 1440)
    last_day = {r["device_id"]: r for r in features.where(F.col("window_date") == DAYS[-1]).toArrow().to_pylist()}
    hydrated = {r["hydrated_at"] for r in rows.values()}
    assert len(hydrated) == 1
    for device_id, row in rows.items():
        assert [row[c] for c in ("site_id", "model", "refrigerant", "install_date", "status")] == [
            registry[device_id][c] for c in ("site_id", "model", "refrigerant", "install_date", "status")
        ]
        assert row["latest_anomaly_score"] is None  # no scores written yet
        if device_id == SILENT_DEVICE:
            assert row["features_window_end"] is None and row["reading_count_24h"] is None
            continue
        window = last_day[device_id]
        assert row["features_window_end"] == window["window_end"]
        assert row["avg_temperature_evaporator_24h"] == window["temp_evaporator_mean"]
        assert row["avg_compressor_current_24h"] == window["current_compressor_mean"]
        assert row["reading_count_24h"] == window["reading_count"] == 1440


@pytest.mark.integration
def test_a_day_still_in_progress_is_not_served_as_the_latest_day(spark, fleet):
    from fs_assets.ontology.objects import device_objects_frame

    delta = DeltaTables(spark=DeltaSparkResource())
    features = delta.read("device_features/v1")
    registry = delta.read("device_registry")
    during_second_day = datetime.fromisoformat(DAYS[-1] + "T12:00:00+00:00")
    rows = {r["device_id"]: r for r in device_objects_frame(features, registry, None, during_second_day).toArrow().to_pylist()}
    served = [r for r in rows.values() if r["features_window_end"] is not None]
    assert served and {r["features_window_end"] for r in served} == {datetime.fromisoformat(DAYS[-1] + "T00:00:00+00:00")}


@pytest.mark.integration
def test_reads_return_exactly_the_offline_values_and_types(spark, fleet):
    assert prehydrate(fleet).success
    offline = objects(spark)
    online_store = store(fleet)
    ids = sorted(offline)
    online = dict(zip(ids, online_store.get_online_features(ids)))
    for device_id, row in offline.items():
        if row["status"] == "retired":
            assert online[device_id] is None
            continue
        got = online[device_id]
        assert got is not None, device_id
        assert list(got) == list(DEVICE.property_names)
        for name, value in row.items():
            assert got[name] == value and type(got[name]) is type(value), (device_id, name, value, got[name])
            if isinstance(value, float):
                assert math.copysign(1, value) == math.copysign(1, got[name]) and value.hex() == got[name].hex()
    sample = online[ids[0]]
    assert isinstance(sample["install_date"], date) and isinstance(sample["reading_count_24h"], int)
    assert sample["hydrated_at"].tzinfo is not None and sample["hydrated_at"].utcoffset() == timedelta(0)
    assert online[SILENT_DEVICE]["avg_temperature_evaporator_24h"] is None and online[SILENT_DEVICE]["site_id"] is not None

    assert online_store.get_online_features(["dev-07777"]) == [None]
    subset = online_store.get_online_features([ids[0], "dev-07777", ids[0]], properties=["reading_count_24h", "status"])
    assert subset[0] == {"reading_count_24h": offline[ids[0]]["reading_count_24h"], "status": offline[ids[0]]["status"]}
    assert subset[1] is None and subset[2] == subset[0]
    with pytest.raises(UnknownProperty, match="avg_temp.*known"):
        online_store.get_online_features(ids[:1], properties=["avg_temp"])
    with pytest.raises(InvalidDeviceId, match="not a device id"):
        online_store.get_online_features(["dev-1*"])


@pytest.mark.integration
def test_each_served_models_input_vector_reads_as_the_offline_window_in_the_models_order(spark, fleet):
    assert prehydrate(fleet).success
    statuses = {d: r["status"] for d, r in objects(spark).items()}
    ids = sorted(statuses)
    windows = DeltaTables(spark=DeltaSparkResource()).read("device_features/v1").toArrow().to_pylist()
    online_store = store(fleet)
    for model in models_for("v1").values():
        mine = [w for w in windows if w["window_duration_minutes"] == model.window_minutes]
        latest = {}
        for w in mine:
            if w["window_end"] > latest.get(w["device_id"], w["window_end"] - timedelta(days=1)):
                latest[w["device_id"]] = w["window_end"]
        by_key = {(w["device_id"], w["window_end"]): w for w in mine}
        vectors = dict(zip(ids, online_store.get_online_features(ids, model=model.name)))
        compared = 0
        for device_id, vector in vectors.items():
            if statuses[device_id] == "retired" or device_id == SILENT_DEVICE:
                assert vector is None, (model.name, device_id)
                continue
            assert list(vector) == [*model.features, "window_start", "window_end", "hydrated_at"]
            assert vector["window_end"] == latest[device_id] and vector["window_end"] - vector["window_start"] == timedelta(
                minutes=model.window_minutes
            )
            offline = by_key[(device_id, vector["window_end"])]
            for name in model.features:
                want = offline[name]
                assert vector[name] == want and type(vector[name]) is type(want), (model.name, device_id, name)
                assert want is None or isinstance(want, int if FEATURES_BY_NAME[name].dtype == "long" else float)
                compared += 1
        assert compared >= len(model.features) * 5
    one = online_store.get_online_features(ids[:1], properties=["pressure_ratio", "window_end"], model="compressor_failure_1h")[0]
    assert list(one) == ["pressure_ratio", "window_end"]
    with pytest.raises(UnknownModel, match="no model 'churn_1d' on feature set v1"):
        online_store.get_online_features(ids[:1], model="churn_1d")
    with pytest.raises(UnknownProperty, match="temp_evaporator_p95"):
        online_store.get_online_features(ids[:1], properties=["temp_evaporator_p95"], model="compressor_failure_1h")


@pytest.mark.integration
def test_checks_pass_and_reconciliation_catches_a_changed_value(spark, fleet):
    result = prehydrate(fleet)
    evaluations = check_results(result)
    assert {name: e.passed for name, e in evaluations.items()} == {
        CHECK_RECONCILIATION: True,
        CHECK_LAG: True,
        CHECK_KEY_COUNT: True,
        CHECK_SERVED_SKEW: True,
    }
    served = [d for d, r in objects(spark).items() if r["status"] != "retired"]
    md = evaluations[CHECK_RECONCILIATION].metadata
    assert md["devices_compared"].value == len(served)
    # Every served value: the Device object's and each served model's vector (the silent device has none).
    fields = len(DEVICE.property_names) - 1 + sum(len(m.features) + 2 for m in models_for("v1").values())
    assert md["values_compared"].value == fields * (len(served) - 1) + len(DEVICE.property_names) - 1

    client = store(fleet).client
    victim = sorted(d for d in served if d != SILENT_DEVICE)[0]
    value = float(client.hget(f"fs:v1:device:{victim}", "avg_compressor_current_24h"))
    client.hset(f"fs:v1:device:{victim}", "avg_compressor_current_24h", repr(value + 1e-3))
    client.delete(f"fs:v1:device:{served[-1]}")
    vector = f"fs:v1:model:compressor_failure_1h:{victim}"
    client.hset(vector, "pressure_ratio", repr(float(client.hget(vector, "pressure_ratio")) + 2e-6))
    reconciliation = dg.materialize(
        [device_objects, device_online_store, *online_checks],
        resources=fleet["resources"],
        instance=fleet["instance"],
        selection=dg.AssetSelection.checks(
            dg.AssetCheckKey(device_online_store.key, CHECK_RECONCILIATION), dg.AssetCheckKey(device_online_store.key, CHECK_KEY_COUNT)
        ),
        run_config={"ops": {f"device_online_store_{CHECK_RECONCILIATION}": {"config": {"sample_size": 0}}}},
    )
    failed = check_results(reconciliation)
    assert not failed[CHECK_RECONCILIATION].passed
    md = failed[CHECK_RECONCILIATION].metadata
    assert md["pairs_differing"].value == 3 and md["values_differing"].value == 2 + len(DEVICE.property_names) - 1
    assert {(r.data["entry"], r.data["device_id"], r.data["field"]) for r in md["differences"].records} >= {
        ("Device", victim, "avg_compressor_current_24h"),
        ("compressor_failure_1h", victim, "pressure_ratio"),
    }
    assert not failed[CHECK_KEY_COUNT].passed and failed[CHECK_KEY_COUNT].metadata["missing_examples"].value == [served[-1]]
    # The next pre-hydration repairs both.
    repaired = check_results(prehydrate(fleet))
    assert set(repaired) == {CHECK_RECONCILIATION, CHECK_LAG, CHECK_KEY_COUNT, CHECK_SERVED_SKEW} and all(
        e.passed for e in repaired.values()
    )


@pytest.mark.integration
def test_a_second_feature_set_version_is_served_beside_the_first(spark, fleet):
    """A deployment moved whole to v2 (its objects and every model pinned there): v2's objects and
    vectors live under fs:v2:, with v2's features; v1's entries are not touched."""
    assert prehydrate(fleet).success
    v1 = store(fleet)
    ids = sorted(v1.live_device_ids())
    before = {m: v1.get_online_features(ids, model=m) for m in (None, *models_for("v1"))}
    every_model_on_v2 = ",".join(f"{name}=v2" for name in models_for("v2"))
    v2 = fleet["resources"] | {"feature_store": FeatureStoreResource(feature_set_version="v2", model_versions=every_model_on_v2)}
    days = {"dagster/asset_partition_range_start": DAYS[0], "dagster/asset_partition_range_end": DAYS[-1]}
    assert dg.materialize([FEATURES_1H, FEATURES_1D], resources=v2, instance=fleet["instance"], tags=days).success
    assert dg.materialize([device_objects, device_online_store], resources=v2, instance=fleet["instance"]).success
    assert {m: v1.get_online_features(ids, model=m) for m in (None, *models_for("v1"))} == before
    served_v2 = OnlineStore.connect(fleet["url"], feature_set_version="v2", model_versions=every_model_on_v2)
    assert served_v2.live_device_ids() == set(ids)
    for name, model in models_for("v2").items():
        vectors = served_v2.get_online_features(ids, model=name)
        live = [v for v in vectors if v is not None]
        assert live and all(list(v)[: len(model.features)] == list(model.features) for v in live)
        assert "vibration_compressor_rms" in model.features and all(isinstance(v["vibration_compressor_rms"], float) for v in live)
        with pytest.raises(UnknownProperty):
            v1.get_online_features(ids[:1], properties=["vibration_compressor_rms"], model=name)


@pytest.mark.integration
def test_entries_expire_and_retired_and_unknown_devices_are_removed(spark, fleet):
    client = store(fleet).client
    client.hset("fs:v1:device:dev-08888", mapping={"device_id": "dev-08888", "hydrated_at": "2020-01-01T00:00:00.000000+00:00"})
    served = sorted(d for d, r in objects(spark).items() if r["status"] != "retired")
    result = prehydrate(fleet, ttl_seconds=1234)
    assert result.success
    md = {e.asset_key.to_user_string(): e.materialization.metadata for e in result.get_asset_materialization_events()}[
        "device_online_store"
    ]
    assert md["unknown_removed"].value == 1 and md["live_devices"].value == len(served)
    assert served and sorted(store(fleet).live_device_ids()) == served
    assert all(1_200_000 < client.pttl(f"fs:v1:device:{d}") <= 1_234_000 for d in served)

    # ... and Redis really drops them when it runs out: projected again with a 2 s TTL, every entry is gone within a bounded wait.
    keys = [f"fs:v1:device:{d}" for d in served]
    short = dg.materialize(
        [device_online_store],
        resources={**fleet["resources"], "redis": RedisResource(url=fleet["url"], write_retries=1, ttl_seconds=2)},
        instance=fleet["instance"],
    )
    md = {e.asset_key.to_user_string(): e.materialization.metadata for e in short.get_asset_materialization_events()}["device_online_store"]
    assert md["ttl_seconds"].value == 2 and md["devices_written"].value == len(served)
    ttls = [client.pttl(k) for k in keys]
    assert all(t == -2 or 0 < t <= 2000 for t in ttls), ttls  # -2: already expired; -1 (no expiry) would fail
    wait_until(lambda: client.exists(*keys) == 0, timeout=30, what="entries with a 2 s TTL to expire")
    assert store(fleet).live_device_ids() == set() and store(fleet).get_online_features(served[:1]) == [None]
    assert prehydrate(fleet).success and sorted(store(fleet).live_device_ids()) == served  # served again for what follows

    # A device retired in the registry disappears from the online store at the next run.
    retiring = served[0]
    _edit_registry(lambda frame: frame.assign(status=frame["status"].where(frame["device_id"] != retiring, "retired")))
    try:
        materialize_registry(fleet["resources"], fleet["instance"])
        result = prehydrate(fleet)
        md = {e.asset_key.to_user_string(): e.materialization.metadata for e in result.get_asset_materialization_events()}[
            "device_online_store"
        ]
        assert md["retired_removed"].value == 1
        assert store(fleet).get_online_features([retiring]) == [None]
    finally:
        _edit_registry(lambda frame: frame.assign(status=frame["status"].where(frame["device_id"] != retiring, "active")))
        materialize_registry(fleet["resources"], fleet["instance"])


def _snapshot(spark, hydrated_at: datetime) -> dict[str, list]:
    rows = list(objects(spark).values())
    return {name: [hydrated_at if name == "hydrated_at" else r[name] for r in rows] for name in DEVICE.property_names}


@pytest.mark.integration
def test_an_older_projection_never_overwrites_a_newer_one(spark, fleet):
    online_store = store(fleet)
    newer = datetime(2030, 1, 1, tzinfo=timezone.utc)
    older = newer - timedelta(hours=1)
    assert online_store.project(_snapshot(spark, newer), newer).written > 0
    late = online_store.project(_snapshot(spark, older), older)
    assert late.superseded and late.written == 0
    # Even past the projection-level guard, each entry keeps its newer snapshot.
    online_store.client.hdel(online_store.projection_key, "newest_started")
    report = online_store.project(_snapshot(spark, older), older)
    assert report.written == 0 and report.skipped_newer == report.live_devices > 0
    live = online_store.get_online_features(sorted(online_store.live_device_ids()), properties=["hydrated_at"])
    assert {r["hydrated_at"] for r in live} == {newer}
    online_store.client.flushdb()


@pytest.mark.integration
def test_redis_down_fails_clearly_after_bounded_retries_and_a_restart_is_restored(spark, fleet):
    server: EmbeddedRedis = fleet["server"]
    port = int(server.port_file.read_text())
    assert prehydrate(fleet).success
    server.stop()
    started = time.monotonic()
    result = prehydrate(fleet, raise_on_error=False, write_retries=2)
    elapsed = time.monotonic() - started
    assert not result.success
    failure = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"][0]
    message = failure.event_specific_data.error_display_string
    assert "Redis unreachable after 3 attempts" in message and "next run completes the projection" in message
    assert elapsed < 60
    # Restarted empty (nothing persisted): the next run restores every served device.
    server.start(port=port)
    assert store(fleet).live_device_ids() == set()
    result = prehydrate(fleet)
    restored = check_results(result)
    assert (
        result.success
        and set(restored) == {CHECK_RECONCILIATION, CHECK_LAG, CHECK_KEY_COUNT, CHECK_SERVED_SKEW}
        and all(e.passed for e in restored.values())
    )


@pytest.mark.integration
def test_a_redis_stopped_mid_projection_keeps_whole_entries_and_the_next_run_converges(spark, fleet, tmp_path):
    server = EmbeddedRedis(tmp_path / "aof", persistent=True)
    url = server.start()
    try:
        online_store = OnlineStore.connect(url)
        first = datetime(2030, 2, 1, tzinfo=timezone.utc)
        second = first + timedelta(hours=1)
        old, new = _snapshot(spark, first), _snapshot(spark, second)
        old["reading_count_24h"] = [None if v is None else v + 1 for v in old["reading_count_24h"]]  # tell the snapshots apart
        online_store.project(old, first)

        def stop_after_first_batch(done, total):
            if done < total:
                server.stop()

        with pytest.raises(OnlineStoreUnavailable, match="unreachable after 2 attempts"):
            online_store.project(
                new, second, batch_size=2, batches_per_round_trip=1, retries=1, backoff_seconds=0.05, on_batch=stop_after_first_batch
            )
        server.start(port=int(url.rsplit(":", 1)[1].split("/")[0]))
        online_store = OnlineStore.connect(url)
        # Every entry is one whole snapshot, old or new, never a mix; the state still names the old one.
        entries = {d: online_store.get_online_features([d])[0] for d in online_store.live_device_ids()}
        by_snapshot = {"old": 0, "new": 0}
        for device_id, entry in entries.items():
            source = old if entry["hydrated_at"] == first else new
            i = source["device_id"].index(device_id)
            assert entry == {name: (source[name][i] if name != "hydrated_at" else entry["hydrated_at"]) for name in DEVICE.property_names}
            by_snapshot["old" if source is old else "new"] += 1
        assert by_snapshot["new"] == 2 and by_snapshot["old"] > 0
        assert online_store.projection_state().hydrated_at == first
        report = online_store.project(new, second)
        assert not report.superseded
        entries = online_store.get_online_features(sorted(online_store.live_device_ids()), properties=["hydrated_at"])
        assert {e["hydrated_at"] for e in entries} == {second}
        assert online_store.projection_state().hydrated_at == second
    finally:
        server.stop()


@pytest.mark.integration
def test_an_authenticated_redis_works_and_its_password_is_never_logged(spark, fleet, tmp_path, monkeypatch):
    password = "s3cret-Pa55word-0nline"
    server = EmbeddedRedis(tmp_path / "auth", password=password)
    url = server.start()
    try:
        monkeypatch.setenv("REDIS_URL", url)
        resources = {**fleet["resources"], "redis": RedisResource()}
        result = dg.materialize([device_objects, device_online_store, *online_checks], resources=resources, instance=fleet["instance"])
        assert result.success
        md = {e.asset_key.to_user_string(): e.materialization.metadata for e in result.get_asset_materialization_events()}[
            "device_online_store"
        ]
        assert "***" in md["redis"].value
        logged = [str(record) for record in fleet["instance"].all_logs(result.run_id)]
        assert logged and not [line for line in logged if password in line]
        assert OnlineStore.connect().live_device_ids()  # REDIS_URL with the password
        with pytest.raises(Exception, match="(?i)password"):
            OnlineStore.connect(url.replace(password, "wrong")).get_online_features(["dev-00000"])
    finally:
        server.stop()


@pytest.mark.unit
def test_hydrated_at_is_encoded_fixed_width_so_redis_orders_it():
    early = encode_timestamp(datetime(2026, 1, 1, 0, 0, 0, tzinfo=timezone.utc))
    late = encode_timestamp(datetime(2026, 1, 1, 0, 0, 0, 1, tzinfo=timezone.utc))
    assert len(early) == len(late) and early < late


def _prehydration_tick(instance, cursor=None):
    from definitions import defs
    from fs_sensors.prehydration_schedule import prehydration_sensor

    context = dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs)
    result = prehydration_sensor(context)
    return result, context.cursor


@pytest.mark.unit
def test_prehydration_follows_written_windows_of_the_projected_sizes_only():
    instance = dg.DagsterInstance.ephemeral()

    def materialized(asset: str, rows_written: int) -> None:
        metadata = {"rows_written": rows_written}
        instance.report_runless_asset_event(dg.AssetMaterialization(asset, partition="2026-01-05", metadata=metadata))

    materialized("device_features_1d", 0)  # the day is in progress: its 1-day window is still open
    skipped, cursor = _prehydration_tick(instance)
    assert isinstance(skipped, dg.SkipReason) and "without writing" in skipped.skip_message
    materialized("device_features_1h", 100)  # an hour closed: the served model's vectors move
    materialized("device_features_1d", 0)
    materialized("device_features_15m", 400)  # not projected
    request, cursor = _prehydration_tick(instance, cursor)
    assert isinstance(request, dg.RunRequest) and request.tags["fs/trigger"] == "device_features_1h 2026-01-05"
    again, _ = _prehydration_tick(instance, cursor)
    assert isinstance(again, dg.SkipReason)


@pytest.mark.integration
def test_a_new_day_of_features_triggers_prehydration(fleet):
    request, cursor = _prehydration_tick(fleet["instance"])
    assert isinstance(request, dg.RunRequest) and request.run_key.rsplit(":", 1)[1] in DAYS
    again, _ = _prehydration_tick(fleet["instance"], cursor)
    assert isinstance(again, dg.SkipReason)
