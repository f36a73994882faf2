"""Point-in-time lookups against a brute-force reference: every edge, both engines, no leakage."""

from __future__ import annotations

import random
import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pytest

from fs_resources.offline import MAX_PANDAS_ENTITY_ROWS, HistoricalFeaturesError, OfflineStore
from tests.feature_tables import an_instant_after_the_last_commit, commit_times, reference_join, wait_past, windows_frame, write_windows

pytestmark = pytest.mark.integration

UTC = timezone.utc
DAY1 = datetime(2026, 1, 5, tzinfo=UTC)
FEATURES = ["temp_evaporator_mean", "reading_count", "current_compressor_p95"]


def hourly(device_id: str, first: datetime, hours: int) -> list[tuple[str, datetime, int]]:
    return [(device_id, first + timedelta(hours=h), 60) for h in range(hours)]


def assert_same_rows(result: pd.DataFrame, expected: pd.DataFrame, features: list[str]) -> None:
    assert len(result) == len(expected)
    for i in range(len(result)):
        got, want = result.iloc[i], expected.iloc[i]
        for name in [*features, "feature_window_end"]:
            g, w = got[name], want[name]
            if pd.isna(w):
                assert pd.isna(g), (i, name, g, w)
            else:
                assert g == w, (i, name, g, w)


def spark_result(spark, entities: pd.DataFrame, store: OfflineStore, **kwargs) -> pd.DataFrame:
    frame = spark.createDataFrame(entities.assign(_order=range(len(entities))))
    out = store.get_historical_features(frame, **kwargs).toPandas()
    assert list(out["_order"]) == list(range(len(entities))), "rows come back in input order"
    out["feature_window_end"] = pd.to_datetime(out["feature_window_end"]).dt.tz_localize("UTC")
    return out


@pytest.fixture
def edges(spark, data_root):
    """Hourly windows of dev-00001 over 2026-01-05 00:00 to 2026-01-06 03:00 (across midnight),
    a few 15-minute ones, and dev-00002 with one window only."""
    frame = pd.concat(
        [
            windows_frame(hourly("dev-00001", DAY1, 27), seed=1),
            windows_frame([("dev-00001", DAY1 + timedelta(minutes=15 * q), 15) for q in range(8)], seed=2),
            windows_frame([("dev-00002", DAY1 + timedelta(hours=5), 60)], seed=3),
        ],
        ignore_index=True,
    )
    write_windows(spark, frame)
    return frame


EDGE_CASES = [
    ("dev-00001", DAY1 + timedelta(hours=2)),  # exactly at a window_end: that window
    ("dev-00001", DAY1 + timedelta(hours=2, minutes=59, seconds=59)),  # just before the next end
    ("dev-00001", DAY1 + timedelta(hours=28)),  # last end 04:00 next day minus... exactly event - tolerance
    ("dev-00001", DAY1 + timedelta(hours=28, microseconds=1)),  # one microsecond past the tolerance: NULL
    ("dev-00001", DAY1 + timedelta(minutes=30)),  # before the first hourly window ends: NULL
    ("dev-00001", DAY1 + timedelta(days=1, minutes=30)),  # just after midnight: the 23:00-00:00 window of the day before
    ("dev-00002", DAY1 + timedelta(hours=6)),
    ("dev-00002", DAY1 + timedelta(hours=6)),  # a duplicate entity row comes back twice
    ("dev-09999", DAY1 + timedelta(hours=6)),  # never in the store
    ("dev-00001", DAY1 - timedelta(days=30)),  # long before the data
]


def edge_entities() -> pd.DataFrame:
    frame = pd.DataFrame(EDGE_CASES, columns=["device_id", "event_time"])
    frame["label"] = range(len(frame))
    return frame.iloc[::-1].reset_index(drop=True)  # not sorted: order must be kept


def test_every_edge_matches_the_brute_force_reference_on_both_engines(spark, edges, data_root):
    entities = edge_entities()
    store = OfflineStore()
    result = store.get_historical_features(entities, FEATURES, 60)
    expected = reference_join(entities, edges, FEATURES, 60, timedelta(hours=1))
    assert list(result["label"]) == list(entities["label"]) and list(result.columns[:3]) == ["device_id", "event_time", "label"]
    assert_same_rows(result, expected, FEATURES)
    by_label = result.set_index("label")
    assert by_label.loc[0, "feature_window_end"] == DAY1 + timedelta(hours=2)
    assert by_label.loc[1, "feature_window_end"] == DAY1 + timedelta(hours=2)
    assert by_label.loc[2, "feature_window_end"] == DAY1 + timedelta(hours=27)  # exactly event - tolerance
    assert pd.isna(by_label.loc[3, "feature_window_end"]) and pd.isna(by_label.loc[3, "temp_evaporator_mean"])
    assert pd.isna(by_label.loc[4, "feature_window_end"])
    assert by_label.loc[5, "feature_window_end"] == DAY1 + timedelta(days=1)
    assert pd.isna(by_label.loc[8, "reading_count"])
    assert str(result["reading_count"].dtype) == "Int64" and str(result["feature_window_end"].dtype).endswith("UTC]")
    assert_same_rows(spark_result(spark, entities, store, features=FEATURES, window_minutes=60), expected, FEATURES)


def test_randomised_requests_match_the_reference(spark, data_root):
    rng = random.Random(11)
    devices = [f"dev-{i:05d}" for i in range(1, 7)]
    windows = []
    for d in devices:
        for minutes in (15, 60, 1440):
            starts = range(0, 3 * 1440, minutes)
            windows += [(d, DAY1 + timedelta(minutes=s), minutes) for s in starts if rng.random() < 0.7]
    table = windows_frame(windows, seed=5)
    write_windows(spark, table)
    store = OfflineStore()
    entities = pd.DataFrame(
        {
            "device_id": [rng.choice(devices + ["dev-08888"]) for _ in range(300)],
            "event_time": [DAY1 + timedelta(seconds=rng.randrange(-3600, 4 * 86400)) for _ in range(300)],
        }
    )
    # Ties land exactly on window ends, as labels stamped at a boundary do.
    entities.loc[::7, "event_time"] = entities.loc[::7, "event_time"].dt.floor("15min")
    for minutes, tolerance in (
        (15, timedelta(minutes=30)),
        (60, timedelta(hours=1)),
        (1440, timedelta(days=1)),
        (60, timedelta(0)),
        (15, timedelta(hours=6)),
    ):
        result = store.get_historical_features(entities, FEATURES, minutes, tolerance=tolerance)
        assert_same_rows(result, reference_join(entities, table, FEATURES, minutes, tolerance), FEATURES)
    result = spark_result(spark, entities, store, features=FEATURES, window_minutes=15, tolerance=timedelta(minutes=30))
    assert_same_rows(result, reference_join(entities, table, FEATURES, 15, timedelta(minutes=30)), FEATURES)


def test_a_recomputation_after_as_of_never_appears(spark, data_root):
    windows = hourly("dev-00001", DAY1, 6)
    write_windows(spark, windows_frame(windows, seed=1))
    path = str(data_root / "delta" / "device_features" / "v1")
    before_fix = an_instant_after_the_last_commit(path)
    wait_past(before_fix)
    write_windows(spark, windows_frame(windows, seed=1, offset=1000.0))  # the day recomputed later
    assert commit_times(path)[0] > before_fix
    entities = pd.DataFrame({"device_id": ["dev-00001"] * 2, "event_time": [DAY1 + timedelta(hours=3), DAY1 + timedelta(hours=5)]})
    store = OfflineStore()
    then = store.get_historical_features(entities, ["temp_discharge_mean"], 60, as_of=before_fix)
    now = store.get_historical_features(entities, ["temp_discharge_mean"], 60)
    assert len(then) == len(now) == 2
    assert (then["temp_discharge_mean"] < 500).all() and (now["temp_discharge_mean"] > 500).all()
    spark_then = spark_result(spark, entities, store, features=["temp_discharge_mean"], window_minutes=60, as_of=before_fix)
    assert list(spark_then["temp_discharge_mean"]) == list(then["temp_discharge_mean"])
    before_anything = store.get_historical_features(entities, ["temp_discharge_mean"], 60, as_of=DAY1)
    assert before_anything["temp_discharge_mean"].isna().all() and len(before_anything) == 2


def test_a_window_ending_after_the_event_never_joins(spark, data_root):
    write_windows(spark, windows_frame([("dev-00001", DAY1, 1440)], seed=1))
    entities = pd.DataFrame(
        {
            "device_id": ["dev-00001"] * 3,
            "event_time": [
                DAY1 + timedelta(hours=23, minutes=59),
                DAY1 + timedelta(days=1) - timedelta(microseconds=1),
                DAY1 + timedelta(days=1),
            ],
        }
    )
    result = OfflineStore().get_historical_features(entities, ["reading_count"], 1440, tolerance=timedelta(days=2))
    assert result["feature_window_end"].isna().tolist() == [True, True, False]


def test_only_the_partitions_of_the_entity_range_are_read(spark, data_root, edges):
    # Break every file of a day no entity row can reach: reading it would fail.
    far = windows_frame(hourly("dev-00001", DAY1 + timedelta(days=20), 3), seed=9)
    write_windows(spark, far)
    for path in Path(data_root, "delta/device_features/v1").glob("window_date=2026-01-25/**/*.parquet"):
        path.write_bytes(b"not parquet")
    entities = pd.DataFrame({"device_id": ["dev-00001"], "event_time": [DAY1 + timedelta(hours=3)]})
    assert OfflineStore().get_historical_features(entities, FEATURES, 60)["feature_window_end"].iloc[0] == DAY1 + timedelta(hours=3)
    shutil.rmtree(Path(data_root, "delta/device_features/v1/window_date=2026-01-25"))


def test_requests_that_cannot_be_answered_say_what_to_change(spark, edges):
    store = OfflineStore()
    good = pd.DataFrame({"device_id": ["dev-00001"], "event_time": [DAY1]})
    cases = [
        (good, ["temp_evaporator_mean", "no_such_feature"], 60, {}, "unknown features \\['no_such_feature'\\]"),
        (good, ["vibration_compressor_rms"], 60, {}, "not in feature set v1"),
        (good, FEATURES, 30, {}, "window_minutes must be one of"),
        (good.drop(columns="event_time"), FEATURES, 60, {}, "lacks columns \\['event_time'\\]"),
        (good.assign(event_time=good["event_time"].dt.tz_localize(None)), FEATURES, 60, {}, "naive.*tz_localize"),
        (good.assign(event_time=["2026-01-05T00:00:00Z"]), FEATURES, 60, {}, "pd.to_datetime"),
        (good.assign(device_id=[42]), FEATURES, 60, {}, "device_id must hold strings"),
        (good, FEATURES, 60, {"as_of": datetime(2026, 1, 1)}, "as_of is a naive datetime"),
        (good, "temp_evaporator_mean", 60, {}, "list of feature names"),
        (good.assign(reading_count=1), FEATURES, 60, {}, "already has columns"),
    ]
    for entities, features, minutes, kwargs, message in cases:
        with pytest.raises(HistoricalFeaturesError, match=message):
            store.get_historical_features(entities, features, minutes, **kwargs)
    too_many = pd.DataFrame({"device_id": ["dev-00001"] * (MAX_PANDAS_ENTITY_ROWS + 1), "event_time": DAY1})
    with pytest.raises(HistoricalFeaturesError, match="pass a Spark DataFrame"):
        store.get_historical_features(too_many, FEATURES, 60)
    ntz = spark.sql("SELECT 'dev-00001' AS device_id, TIMESTAMP_NTZ'2026-01-05 00:00:00' AS event_time")
    with pytest.raises(HistoricalFeaturesError, match="TIMESTAMP_NTZ"):
        store.get_historical_features(ntz, FEATURES, 60)


def test_an_empty_entity_frame_comes_back_empty_with_the_feature_columns(edges):
    empty = pd.DataFrame({"device_id": pd.Series([], dtype=object), "event_time": pd.Series([], dtype="datetime64[us, UTC]")})
    result = OfflineStore().get_historical_features(empty, FEATURES, 60)
    assert len(result) == 0 and list(result.columns) == ["device_id", "event_time", *FEATURES, "feature_window_end"]
