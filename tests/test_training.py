"""Labels, training sets, reference snapshots, their promotion, anomaly scores and drift, materialized for real."""

from __future__ import annotations

import dataclasses
import json
import shutil
from datetime import UTC, timedelta
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest
from pyspark.sql import functions as F

from fs_assets.features.assets import device_features_1d as FEATURES_1D
from fs_assets.features.assets import device_features_1h as FEATURES_1H
from fs_assets.ingest.assets import maintenance_events
from fs_assets.monitoring.assets import RANGE_MARGIN, anomaly_scores, feature_drift_report
from fs_assets.ontology.assets import device_objects, device_online_store
from fs_assets.training.anomaly import ReferenceModel, auc, score_windows
from fs_assets.training.assets import feature_reference_snapshot, promoted_reference, training_assets, training_dataset
from fs_assets.training.datasets import feature_statistics, label_entities, sample_entities
from fs_assets.training.reference import promoted, read_device_references
from fs_checks.online_checks import CHECK_RECONCILIATION, online_checks
from fs_checks.score_checks import CHECK_SCORE_CONFIDENCE, score_checks
from fs_domain.models import COMPRESSOR_FAILURE_1H, DEVICE_HEALTH_1D, MODEL_NAMES, model_spec
from fs_resources import settings
from fs_resources.delta import DeltaTables
from fs_resources.feature_store import FeatureStoreResource
from fs_resources.online import OnlineStore
from fs_resources.redis_store import RedisResource
from fs_resources.simulator.fleet import FleetSpec, generate
from fs_resources.spark import DeltaSparkResource
from tests.conftest import SIM_START
from tests.feature_tables import reference_join
from tests.ingest_runs import materialize_clean_range, materialize_registry

DAYS = [(SIM_START + timedelta(days=i)).isoformat() for i in range(3)]
MODEL = DEVICE_HEALTH_1D.name
RANGE = {"dagster/asset_partition_range_start": DAYS[0], "dagster/asset_partition_range_end": DAYS[-1]}


def table(spark, name: str) -> pd.DataFrame:
    frame = DeltaTables(spark=DeltaSparkResource()).read(name).toPandas()
    for column in frame.columns:
        if pd.api.types.is_datetime64_any_dtype(frame[column]):
            frame[column] = frame[column].dt.tz_localize("UTC")
    return frame


@pytest.fixture(scope="module")
def trained(spark, redis_server, tmp_path_factory):
    """Twelve devices over three days, a third of them degrading into a compressor failure:
    ingested, 1-hour and 1-day features, both models' training sets, references and promotions
    (device_health_1d step by step, so each step's result can be looked at), and the scores."""
    root = tmp_path_factory.mktemp("training") / "data"
    spec = dataclasses.replace(FleetSpec.clean(devices=12, start=SIM_START, days=3, seed=21), degrading_share=0.35)
    with pytest.MonkeyPatch.context() as patch, dg.instance_for_test() as instance:
        patch.setenv("FS_DATA_ROOT", str(root))
        resources = {
            "spark": DeltaSparkResource(),
            "delta": DeltaTables(spark=DeltaSparkResource()),
            "feature_store": FeatureStoreResource(),
            "redis": RedisResource(url=redis_server),
        }
        generate(spec, str(root))
        with open(settings.maintenance_csv_path(), "a") as events:
            events.write(
                "dev 01;x,2026-01-06T00:00:00Z,failure,compressor,typo in the id\ndev-00001,yesterday,failure,compressor,bad time\n"
            )
        # One unit in maintenance: it keeps reporting, and drift must leave it out.
        registry = pd.read_csv(settings.registry_csv_path())
        registry.loc[registry.index[-1], "status"] = "maintenance"
        registry.to_csv(settings.registry_csv_path(), index=False)
        materialize_registry(resources, instance)
        assert materialize_clean_range(resources, instance, DAYS[0], DAYS[-1]).success
        assert dg.materialize([FEATURES_1H, FEATURES_1D], resources=resources, instance=instance, tags=RANGE).success
        labels = dg.materialize([maintenance_events], resources=resources, instance=instance)
        built = dg.materialize([training_dataset], partition_key=MODEL, resources=resources, instance=instance)
        reference = dg.materialize([feature_reference_snapshot], partition_key=MODEL, resources=resources, instance=instance)
        promotion = dg.materialize(
            [promoted_reference],
            partition_key=MODEL,
            resources=resources,
            instance=instance,
            run_config={"ops": {"promoted_reference": {"config": {"promoted_by": "ml-oncall", "reason": "first baseline"}}}},
        )
        hourly = dg.materialize(training_assets, partition_key=COMPRESSOR_FAILURE_1H.name, resources=resources, instance=instance)
        scored = dg.materialize([anomaly_scores, *score_checks], resources=resources, instance=instance, tags=RANGE)
        yield {
            "resources": resources,
            "instance": instance,
            "root": root,
            "labels": labels,
            "built": built,
            "reference": reference,
            "promotion": promotion,
            "hourly": hourly,
            "scored": scored,
        }


def materialized(result) -> dict:
    (event,) = result.get_asset_materialization_events()
    return {k: v.value for k, v in event.materialization.metadata.items()}


@pytest.mark.integration
def test_maintenance_events_keep_valid_rows_and_report_the_rest(spark, trained):
    assert trained["labels"].success
    md = materialized(trained["labels"])
    rejected = {r["problem"] for r in md["rejected_rows"]}
    assert rejected == {"malformed device id", "event_time is not an ISO-8601 timestamp"}
    events = table(spark, "maintenance_events")
    assert len(events) == md["events"] > 0 and set(events["event_type"]) <= {"failure", "service"}
    assert str(events["event_time"].dt.tz) == "UTC"


@pytest.mark.integration
def test_the_training_set_has_brute_force_labels_and_point_in_time_features(spark, trained):
    assert trained["built"].success
    dataset = table(spark, f"training_datasets/v1/{MODEL}")
    registry = table(spark, "device_registry")
    assert len(dataset) == len(registry) * 3  # one sample per device at each of the three midnights after day one
    events = table(spark, "maintenance_events")
    failures = events[events["event_type"] == "failure"]
    for row in dataset.itertuples():
        upcoming = failures[
            (failures["device_id"] == row.device_id)
            & (failures["event_time"] > row.event_time)
            & (failures["event_time"] <= row.event_time + timedelta(days=7))
        ]
        assert row.label == int(len(upcoming) > 0), row
    assert dataset["label"].sum() > 0
    windows = table(spark, "device_features/v1")
    expected = reference_join(
        dataset[["device_id", "event_time"]], windows, list(DEVICE_HEALTH_1D.features), 1440, DEVICE_HEALTH_1D.tolerance
    )
    for name in [*DEVICE_HEALTH_1D.features, "feature_window_end"]:
        got, want = dataset[name], expected[name]
        assert (got.isna() == want.isna()).all(), name
        assert got.notna().any(), f"{name} is NULL in every row: nothing to compare"
        assert (got[got.notna()].astype(object) == want[want.notna()].astype(object)).all(), name
    md = materialized(trained["built"])
    assert md["positives"] == dataset["label"].sum() and md["features_as_of"]
    # The rows say which model, feature set and Delta versions they were built from.
    features_version = DeltaTables(spark=DeltaSparkResource()).version("device_features/v1")
    assert set(dataset["model"]) == {MODEL} and set(dataset["feature_set_version"]) == {"v1"}
    assert set(dataset["features_delta_version"]) == {features_version} == {md["features_delta_version"]}


@pytest.mark.unit
def test_labels_look_strictly_ahead_within_the_horizon():
    entities = sample_entities(
        ["dev-00001", "dev-00002"],
        pd.Timestamp("2026-01-05", tz="UTC").to_pydatetime(),
        pd.Timestamp("2026-01-06", tz="UTC").to_pydatetime(),
        timedelta(hours=6),
    )
    events = pd.DataFrame(
        {
            "device_id": ["dev-00001", "dev-00001", "dev-00002"],
            "event_time": pd.to_datetime(["2026-01-05T12:00:00Z", "2026-01-07T00:00:00Z", "2026-01-05T06:00:00Z"]).astype(
                "datetime64[us, UTC]"
            ),
            "event_type": ["failure", "service", "failure"],
        }
    )
    labelled = label_entities(entities, events, timedelta(hours=6), ("failure",))
    got = {(r.device_id, r.event_time.hour, r.event_time.day): r.label for r in labelled.itertuples()}
    # dev-00001 fails at 12:00: labelled at 06:00 (6 h ahead, inclusive), not at 12:00 itself.
    assert got[("dev-00001", 6, 5)] == 1 and got[("dev-00001", 12, 5)] == 0 and got[("dev-00001", 0, 6)] == 0
    # dev-00002's failure at 06:00 is the first sample itself: only what is strictly ahead counts.
    assert got[("dev-00002", 6, 5)] == 0 and sum(labelled["label"]) == 1


@pytest.mark.integration
def test_the_reference_snapshot_is_a_versioned_artifact_and_a_delta_row(spark, trained):
    assert trained["reference"].success
    md = materialized(trained["reference"])
    snapshot = json.loads(open(md["artifact"]).read())
    assert snapshot["model"] == MODEL and snapshot["version"] == 1 and snapshot["features"] == list(DEVICE_HEALTH_1D.features)
    assert snapshot["feature_set_version"] == "v1" and f"training_datasets/v1/{MODEL}" in snapshot["read_versions"]
    dataset = table(spark, f"training_datasets/v1/{MODEL}")
    values = dataset["temp_evaporator_mean"].dropna()
    stats = snapshot["statistics"]["temp_evaporator_mean"]
    assert stats["mean"] == pytest.approx(values.mean(), rel=1e-12)
    assert stats["p50"] == pytest.approx(np.quantile(values, 0.5), rel=1e-12)
    assert stats["null_fraction"] == pytest.approx(dataset["temp_evaporator_mean"].isna().mean())
    assert len(stats["bin_shares"]) == len(stats["bin_edges"]) + 1 and sum(stats["bin_shares"]) == pytest.approx(1.0)
    assert snapshot["devices"] == dataset["device_id"].nunique()
    # The training range starts where the earliest window starts, a day before it ends.
    first_end = dataset["feature_window_end"].dropna().min()
    assert pd.Timestamp(snapshot["training_start"]) == first_end - timedelta(days=1)
    assert pd.Timestamp(snapshot["training_end"]) == dataset["feature_window_end"].dropna().max()


@pytest.mark.integration
def test_anomaly_scores_are_the_scorer_against_each_devices_own_reference_and_reach_the_device_object(spark, trained):
    assert trained["scored"].success
    delta = trained["resources"]["delta"]
    all_scores = table(spark, "anomaly_scores/v1")
    features = table(spark, "device_features/v1")
    used = {}
    for model in (DEVICE_HEALTH_1D, COMPRESSOR_FAILURE_1H):
        scores = all_scores[all_scores["model"] == model.name]
        windows = features[features["window_duration_minutes"] == model.window_minutes]
        windows = windows.sort_values(["device_id", "window_start"]).reset_index(drop=True)
        assert len(scores) == len(windows) > 0
        _, snapshot = promoted(delta, model)
        assert set(scores["snapshot_version"]) == {snapshot.version} and set(scores["feature_set_version"]) == {"v1"}
        own = read_device_references(delta, model, snapshot.version)
        assert snapshot.device_references == len(own)
        expected = score_windows(windows, model.scored_features, ReferenceModel.from_dict(snapshot.fleet_reference), own)
        merged = (
            windows[["device_id", "window_start"]].join(expected).merge(scores, on=["device_id", "window_start"], suffixes=("", "_table"))
        )
        assert len(merged) == len(windows)
        assert np.allclose(merged["anomaly_score"], merged["anomaly_score_table"], rtol=1e-12, equal_nan=True)
        assert (merged["reference"] == merged["reference_table"]).all()
        assert (merged["reference"] == np.where(merged["device_id"].isin(list(own)), "device", "fleet")).all()
        joined = merged["top_features"].map(lambda names: ", ".join(names) if names else "")
        assert (joined == merged["top_features_table"].fillna("")).all() and (joined != "").any()
        used[model.name] = set(merged["reference"])
    # Three days give a device three daily windows (the fleet's reference for all) but 72 hourly ones (its own).
    assert used == {MODEL: {"fleet"}, COMPRESSOR_FAILURE_1H.name: {"device"}}
    assert dg.materialize([device_objects], resources=trained["resources"], instance=trained["instance"]).success
    objects = table(spark, "device_objects/v1").set_index("device_id")
    daily = all_scores[all_scores["model"] == MODEL]
    latest = daily.sort_values("window_end").groupby("device_id").last()
    for device_id, row in latest.iterrows():
        assert objects.loc[device_id, "latest_anomaly_score"] == row["anomaly_score"]
        assert objects.loc[device_id, "anomaly_top_features"] == row["top_features"]
        assert objects.loc[device_id, "anomaly_reference"] == row["reference"] == "fleet"


@pytest.mark.unit
def test_auc_counts_ranks():
    rng = np.random.default_rng(3)
    s, y = rng.normal(size=200), rng.random(200) < 0.3
    pairs = np.mean([(a > b) + 0.5 * (a == b) for a in s[y] for b in s[~y]])
    assert auc(s, y) == pytest.approx(pairs)
    assert feature_statistics(pd.Series([np.nan, np.nan]))["null_fraction"] == 1.0


@pytest.mark.unit
def test_labels_are_all_zero_when_no_event_was_ever_recorded():
    entities = sample_entities(
        ["dev-00001"],
        pd.Timestamp("2026-01-05", tz="UTC").to_pydatetime(),
        pd.Timestamp("2026-01-06", tz="UTC").to_pydatetime(),
        timedelta(hours=12),
    )
    no_events = pd.DataFrame(
        {
            "device_id": pd.Series([], dtype=object),
            "event_time": pd.Series([], dtype="datetime64[ns]"),
            "event_type": pd.Series([], dtype=object),
        }
    )
    labelled = label_entities(entities, no_events, timedelta(days=1), ("failure",))
    assert list(labelled["label"]) == [0, 0] and labelled["hours_to_event"].isna().all()


@pytest.mark.integration
def test_a_snapshot_is_a_baseline_only_once_promoted_and_promoting_an_older_one_rolls_back(spark, trained):
    resources, instance = trained["resources"], trained["instance"]
    md = materialized(trained["promotion"])
    assert md["snapshot_version"] == 1 and md["promoted_by"] == "ml-oncall" and md["reason"] == "first baseline"

    def drift_baseline() -> set[int]:
        result = dg.materialize([feature_drift_report], partition_key=DAYS[-1], resources=resources, instance=instance)
        rows = table(spark, "feature_drift_monitoring/v1")
        rows = rows[(rows["model"] == MODEL) & (rows["report_date"].astype(str) == DAYS[-1])]
        assert materialized(result)["models"][MODEL] == set(rows["snapshot_version"]).pop()
        return set(rows["snapshot_version"])

    delta = DeltaTables(spark=DeltaSparkResource())
    # A new snapshot moves nothing by itself.
    again = dg.materialize([feature_reference_snapshot], partition_key=MODEL, resources=resources, instance=instance)
    assert materialized(again)["snapshot_version"] == 2 and materialized(again)["promoted_snapshot_version"] == 1
    assert promoted(delta, DEVICE_HEALTH_1D)[1].version == 1
    # Promoted (the latest, by default), it is what drift compares against; promoting v1 again rolls back.
    assert dg.materialize([promoted_reference], partition_key=MODEL, resources=resources, instance=instance).success
    assert drift_baseline() == {2}
    back = dg.materialize(
        [promoted_reference],
        partition_key=MODEL,
        resources=resources,
        instance=instance,
        run_config={"ops": {"promoted_reference": {"config": {"snapshot_version": 1, "reason": "v2 pages too often"}}}},
    )
    assert materialized(back)["previous_snapshot_version"] == 2 and drift_baseline() == {1}
    history = table(spark, "model_promotions/v1")
    history = history[history["model"] == MODEL].sort_values("promoted_at")
    assert list(history["snapshot_version"]) == [1, 2, 1] and list(history["reason"])[-1] == "v2 pages too often"
    # A snapshot that does not exist is refused, and the baseline stays.
    missing = dg.materialize(
        [promoted_reference],
        partition_key=MODEL,
        resources=resources,
        instance=instance,
        run_config={"ops": {"promoted_reference": {"config": {"snapshot_version": 9}}}},
        raise_on_error=False,
    )
    assert not missing.success and promoted(delta, DEVICE_HEALTH_1D)[1].version == 1


@pytest.mark.integration
def test_both_models_are_scored_with_their_inputs_completeness_and_a_confidence_flag(spark, trained):
    assert trained["hourly"].success
    scores = table(spark, "anomaly_scores/v1")
    windows = table(spark, "device_features/v1")
    hourly = scores[scores["model"] == COMPRESSOR_FAILURE_1H.name]
    hours = windows[windows["window_duration_minutes"] == 60]
    assert len(hourly) == len(hours) > 0 and (hourly["window_end"] - hourly["window_start"] == pd.Timedelta(hours=1)).all()
    merged = hourly.merge(hours, on=["device_id", "window_start"], suffixes=("", "_features"))
    assert len(merged) == len(hourly)
    assert (merged["reading_count"] == merged["reading_count_features"]).all()
    assert np.allclose(merged["sensor_completeness"], merged["sensor_completeness_features"])
    # Reduced confidence exactly where the inputs are sparse or fall well outside the reference's range.
    snapshot = json.loads(
        open(table(spark, "feature_reference_snapshots/v1").query(f"model == '{COMPRESSOR_FAILURE_1H.name}'")["artifact"].iat[0]).read()
    )
    outside = np.zeros(len(merged), dtype=int)
    for name in COMPRESSOR_FAILURE_1H.features:
        low, high = snapshot["statistics"][name]["min"], snapshot["statistics"][name]["max"]
        low, high = low - RANGE_MARGIN * (high - low), high + RANGE_MARGIN * (high - low)
        values = merged[f"{name}"].astype(float)
        outside += ((values < low) | (values > high)).to_numpy()
    sparse = (merged["reading_count"] < 30) | (merged["sensor_completeness"] < 0.8)
    assert (merged["inputs_out_of_range"].to_numpy() == outside).all()
    assert (merged["reduced_confidence"].to_numpy() == (sparse.to_numpy() | (outside > 0))).all()
    # The check counts them per day and model.
    evaluation = next(e for e in trained["scored"].get_asset_check_evaluations() if e.check_name == CHECK_SCORE_CONFIDENCE)
    per_day = {(r.data["day"], r.data["model"]): r.data["reduced_confidence"] for r in evaluation.metadata["per_day"].records}
    for (day, model), count in per_day.items():
        rows = scores[(scores["window_date"].astype(str) == day) & (scores["model"] == model)]
        assert int(rows["reduced_confidence"].sum()) == count
    assert {m for _, m in per_day} == set(MODEL_NAMES)


@pytest.mark.integration
def test_drift_is_measured_over_active_devices_only(spark, trained):
    resources, instance = trained["resources"], trained["instance"]
    registry = table(spark, "device_registry")
    result = dg.materialize([feature_drift_report], partition_key=DAYS[1], resources=resources, instance=instance)
    assert result.success
    rows = table(spark, "feature_drift_monitoring/v1")
    rows = rows[(rows["report_date"].astype(str) == DAYS[1]) & (rows["model"] == MODEL)]
    active = registry.loc[registry["status"] == "active", "device_id"]
    windows = table(spark, "device_features/v1")
    day = windows[(windows["window_duration_minutes"] == 1440) & (windows["window_date"].astype(str) == DAYS[1])]
    assert len(active) < len(registry), "the fleet needs a retired or maintenance device for this to bite"
    assert set(rows["devices"]) == {int(day["device_id"].isin(active).sum())}
    mean = rows.set_index("feature").loc["temp_evaporator_mean", "mean"]
    assert mean == pytest.approx(day.loc[day["device_id"].isin(active), "temp_evaporator_mean"].mean(), rel=1e-12)


@pytest.mark.integration
def test_models_pinned_to_different_versions_are_trained_scored_served_and_reconciled_side_by_side(spark, trained):
    """device_health_1d moves to v2 while compressor_failure_1h stays on v1, in one deployment: one
    run computes both versions' features, each model is trained, scored, reported on, served and
    reconciled on its own version, and the moved model's v1 line is left as it was."""
    resources, instance = trained["resources"], trained["instance"]
    delta = DeltaTables(spark=DeltaSparkResource())
    v1_line = [f"training_datasets/v1/{MODEL}", "feature_reference_snapshots/v1", "model_promotions/v1", "device_features/v1"]
    before = {t: delta.version(t) for t in v1_line}
    pinned = resources | {"feature_store": FeatureStoreResource(model_versions=f"{MODEL}=v2")}
    online = OnlineStore.connect(resources["redis"].resolved_url(), model_versions=f"{MODEL}=v2")
    # Pinned before v2 has features: the Device object and the model still on v1 are projected all the same.
    assert dg.materialize([device_objects, device_online_store], resources=pinned, instance=instance).success
    ids = sorted(online.live_device_ids())
    assert ids and not any(online.get_online_features(ids, model=MODEL))
    assert any(online.get_online_features(ids, model=COMPRESSOR_FAILURE_1H.name))
    assert dg.materialize([FEATURES_1D], resources=pinned, instance=instance, tags=RANGE).success
    assert dg.materialize(training_assets, partition_key=MODEL, resources=pinned, instance=instance).success
    monitored = dg.materialize([anomaly_scores, feature_drift_report, *score_checks], resources=pinned, instance=instance, tags=RANGE)
    assert monitored.success
    served = dg.materialize([device_objects, device_online_store, *online_checks], resources=pinned, instance=instance)
    assert served.success
    # The v1 features were already current: the run computed v2's beside them and rewrote nothing.
    assert {t: delta.version(t) for t in v1_line} == before

    features = {v: table(spark, f"device_features/{v}") for v in ("v1", "v2")}
    daily = features["v2"][features["v2"]["window_duration_minutes"] == 1440]
    training = table(spark, f"training_datasets/v2/{MODEL}")
    assert set(training["feature_set_version"]) == {"v2"} and "vibration_compressor_rms" in training.columns
    assert set(table(spark, "model_promotions/v2")["model"]) == {MODEL}
    scores = {v: table(spark, f"anomaly_scores/{v}") for v in ("v1", "v2")}
    assert set(scores["v2"]["model"]) == {MODEL} and len(scores["v2"]) == len(daily) > 0
    hourly = scores["v1"][scores["v1"]["model"] == COMPRESSOR_FAILURE_1H.name]
    assert len(hourly) == (features["v1"]["window_duration_minutes"] == 60).sum() and set(hourly["feature_set_version"]) == {"v1"}
    assert hourly["scored_at"].min() == scores["v2"]["scored_at"].min(), "both models scored by the same run"
    drift = table(spark, "feature_drift_monitoring/v2")
    assert set(drift["model"]) == {MODEL} and "vibration_compressor_rms" in set(drift["feature"])
    confidence = next(e for e in monitored.get_asset_check_evaluations() if e.check_name == CHECK_SCORE_CONFIDENCE)
    assert {r.data["model"] for r in confidence.metadata["per_day"].records} == set(MODEL_NAMES)

    # Served: the Device object (v1) shows the v2 score; each model's vector is its own version's window.
    objects = table(spark, "device_objects/v1").set_index("device_id")
    latest = scores["v2"].sort_values("window_end").groupby("device_id").last()
    assert all(objects.loc[d, "latest_anomaly_score"] == row["anomaly_score"] for d, row in latest.iterrows())
    hydrated_at = online.projection_state().hydrated_at
    for model, version in ((model_spec(MODEL, "v2"), "v2"), (model_spec(COMPRESSOR_FAILURE_1H.name, "v1"), "v1")):
        assert online.layout(model.name).prefix == f"fs:{version}:model:{model.name}:"
        windows = features[version][features[version]["window_duration_minutes"] == model.window_minutes]
        newest = windows.sort_values("window_end").groupby("device_id").last()
        vectors = dict(zip(ids, online.get_online_features(ids, model=model.name)))
        live = {d: v for d, v in vectors.items() if v is not None}
        assert live and all(v["hydrated_at"] == hydrated_at for v in live.values()), f"{model.key} vectors are this projection's"
        for device_id, vector in live.items():
            assert list(vector)[: len(model.features)] == list(model.features)
            assert vector["window_end"] == newest.loc[device_id, "window_end"]
            assert all(
                vector[f] == newest.loc[device_id, f] or newest.loc[device_id, f] != newest.loc[device_id, f] for f in model.features
            )
    reconciled = next(e for e in served.get_asset_check_evaluations() if e.check_name == CHECK_RECONCILIATION)
    assert reconciled.passed and reconciled.metadata["values_differing"].value == 0
    versions = {r.data["entry"]: r.data["feature_set_version"] for r in reconciled.metadata["per_entry"].records}
    assert versions == {"Device": "v1", MODEL: "v2", COMPRESSOR_FAILURE_1H.name: "v1"}


@pytest.mark.integration
def test_a_training_set_samples_a_device_share_a_stride_and_a_class_balance_and_records_them(spark, trained):
    resources, instance = trained["resources"], trained["instance"]
    name = COMPRESSOR_FAILURE_1H.name
    full = table(spark, f"training_datasets/v1/{name}")
    options = {"device_share": 0.5, "sample_stride": 3, "negatives_per_positive": 1.0, "seed": 3}

    def build() -> tuple[pd.DataFrame, dict]:
        run_config = {"ops": {"training_dataset": {"config": options}}}
        result = dg.materialize([training_dataset], partition_key=name, resources=resources, instance=instance, run_config=run_config)
        return table(spark, f"training_datasets/v1/{name}"), materialized(result)

    sampled, md = build()
    devices = set(sampled["device_id"])
    assert devices < set(full["device_id"]) and 0 < len(devices) < len(set(full["device_id"]))
    times = sorted(full["event_time"].unique())
    assert set(sampled["event_time"]) <= set(times[::3])
    # Every positive of the devices and times kept, and about as many negatives.
    kept = full[full["device_id"].isin(devices) & full["event_time"].isin(times[::3])]
    positives = int(kept["label"].sum())
    assert positives > 0 and int(sampled["label"].sum()) == positives
    assert (sampled["label"] == 0).sum() <= 2 * positives and (sampled["label"] == 0).sum() < (kept["label"] == 0).sum()
    # The same rows' features as the full set: sampling picks rows, the point-in-time join is unchanged.
    both = sampled.merge(full, on=["device_id", "event_time"], suffixes=("", "_full"))
    assert len(both) == len(sampled) and (both["feature_window_end"].isna() == both["feature_window_end_full"].isna()).all()
    assert md["sampling"] == options | {"every": str(COMPRESSOR_FAILURE_1H.sample_every * 3)} and md["rows"] == len(sampled)
    # The same options pick the same devices again.
    assert set(build()[0]["device_id"]) == devices


@pytest.mark.integration
def test_a_promoted_models_training_set_is_rebuilt_row_for_row_after_retention_removed_what_it_read(spark, trained, tmp_path, monkeypatch):
    """120 days on (on a copy of the store): the features were recomputed since, maintenance vacuumed the
    files of the version the training set read and the log was cleaned up to a checkpoint. Reading the
    features as of that time now fails clearly; the promoted snapshot's pin rebuilds the set row for row."""
    from delta.tables import DeltaTable
    from deltalake import DeltaTable as LogTable

    from fs_resources.offline import HistoricalFeaturesError, OfflineStore

    root = tmp_path / "data"
    shutil.copytree(trained["root"], root)
    monkeypatch.setenv("FS_DATA_ROOT", str(root))
    delta = DeltaTables(spark=DeltaSparkResource())
    promotion, snapshot = promoted(delta, DEVICE_HEALTH_1D)
    source = f"training_datasets/v1/{MODEL}"
    md = {k: v.value for k, v in trained["promotion"].get_asset_materialization_events()[0].materialization.metadata.items()}
    original = delta.read(source, version=snapshot.read_versions[source])
    assert md["pinned_entities"] == original.count() > 0 and md["pinned_windows"] > 0

    def rows(df) -> list[tuple]:
        return sorted(tuple(str(v) for v in r) for r in df.collect())

    expected = rows(original)
    # The days are recomputed (new values), then retention runs: VACUUM of every file the current
    # version does not hold, and the log kept only from a checkpoint of the current version.
    features = delta.path("device_features/v1")
    DeltaTable.forPath(spark, features).update("window_duration_minutes = 1440", {"temp_evaporator_mean": "temp_evaporator_mean + 1"})
    spark.conf.set("spark.databricks.delta.retentionDurationCheck.enabled", "false")
    try:
        DeltaTable.forPath(spark, features).vacuum(0)
    finally:
        spark.conf.set("spark.databricks.delta.retentionDurationCheck.enabled", "true")
    log = LogTable(features)
    log.create_checkpoint()
    for entry in Path(features, "_delta_log").iterdir():
        if entry.name.endswith(".json") and entry.name[:20].isdigit() and int(entry.name[:20]) < log.version():
            entry.unlink()

    entities = original.select("device_id", "event_time").toPandas()
    entities["event_time"] = entities["event_time"].dt.tz_localize("UTC")
    as_of = original.first()["features_as_of"].replace(tzinfo=UTC)
    with pytest.raises(HistoricalFeaturesError, match="before the retained history.*rebuilt from its pin"):
        OfflineStore().get_historical_features(entities, list(DEVICE_HEALTH_1D.features), 1440, DEVICE_HEALTH_1D.tolerance, as_of=as_of)

    def rebuild(snapshot_version: int):
        with dg.instance_for_test() as instance:
            return dg.materialize(
                [training_dataset],
                partition_key=MODEL,
                resources=trained["resources"],
                instance=instance,
                run_config={"ops": {"training_dataset": {"config": {"rebuild_snapshot": snapshot_version}}}},
                raise_on_error=False,
            )

    rebuilt = rebuild(snapshot.version)
    assert rebuilt.success and materialized(rebuilt)["rebuilt_from_pin_of_snapshot"] == snapshot.version
    assert rows(delta.read(source)) == expected
    # A snapshot never promoted has no pin, and says how to get one.
    unpinned = rebuild(99)
    assert not unpinned.success
    assert "has no pin" in unpinned.get_step_failure_events()[0].step_failure_data.user_failure_data.description


@pytest.mark.integration
def test_a_snapshot_of_a_large_training_set_takes_its_statistics_from_a_sample_and_its_counts_from_all(
    spark, trained, tmp_path, monkeypatch
):
    """Above `SNAPSHOT_SAMPLE_ROWS` the statistics and the fleet's reference come from a seeded uniform
    sample (pandas holds only that); rows, devices and the training range still count every row."""
    import fs_assets.training.assets as training_module

    root = tmp_path / "data"
    shutil.copytree(trained["root"], root)
    monkeypatch.setenv("FS_DATA_ROOT", str(root))
    monkeypatch.setattr(training_module, "SNAPSHOT_SAMPLE_ROWS", 25)
    dataset = table(spark, f"training_datasets/v1/{COMPRESSOR_FAILURE_1H.name}")
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [feature_reference_snapshot], partition_key=COMPRESSOR_FAILURE_1H.name, resources=trained["resources"], instance=instance
        )
    md = materialized(result)
    assert md["rows"] == len(dataset) > 30 and md["devices"] == dataset["device_id"].nunique()
    assert 0 < md["statistics_rows"] < len(dataset)
    snapshot = json.loads(open(md["artifact"]).read())
    assert snapshot["statistics_rows"] == md["statistics_rows"]
    assert sum(s["count"] for s in snapshot["statistics"].values()) == md["statistics_rows"] * len(COMPRESSOR_FAILURE_1H.features)
    first_end = dataset["feature_window_end"].dropna().min()
    assert pd.Timestamp(snapshot["training_start"]) == first_end - timedelta(hours=1)
    assert pd.Timestamp(snapshot["training_end"]) == dataset["feature_window_end"].dropna().max()


@pytest.mark.integration
def test_only_windows_whose_readings_changed_after_their_features_are_stale(spark, trained, tmp_path, monkeypatch):
    """Staleness is judged per window from the clean table's change feed since the version the day's
    features read: a late reading makes its own window stale, not its whole day (a day in progress
    receives readings for its open windows all day long, and those make no computed window stale)."""
    from fs_assets.monitoring.assets import stale_windows

    root = tmp_path / "data"
    shutil.copytree(trained["root"], root)
    monkeypatch.setenv("FS_DATA_ROOT", str(root))
    delta = DeltaTables(spark=DeltaSparkResource())
    instance = trained["instance"]
    untouched = stale_windows(instance, delta, DAYS, 60, "v1")
    assert untouched.windows.empty and not untouched.whole_days

    clean = delta.read("clean_sensor_readings")
    late = clean.where(f"reading_date = DATE'{DAYS[1]}' AND hour(ts) = 10").orderBy("device_id", "ts").limit(1)
    late = late.withColumn("ts", F.timestamp_micros(F.unix_micros("ts") + F.lit(1)))
    late.write.format("delta").mode("append").save(delta.path("clean_sensor_readings"))
    device = late.first()["device_id"]
    judged = stale_windows(instance, delta, DAYS, 60, "v1")
    assert not judged.whole_days
    assert [(r.device_id, str(r.window_start)) for r in judged.windows.itertuples()] == [(device, f"{DAYS[1]} 10:00:00")]
    windows = pd.DataFrame(
        {
            "device_id": [device, device, "dev-other"],
            "window_start": pd.to_datetime([f"{DAYS[1]} 10:00", f"{DAYS[1]} 11:00", f"{DAYS[1]} 10:00"]),
            "window_date": [DAYS[1]] * 3,
        }
    )
    assert judged.mask(windows).tolist() == [True, False, False]
