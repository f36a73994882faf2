"""SKAB's real 1 Hz pump data through the ingest layer, end to end, and through the anomaly score
(needs ../shared/data/skab)."""

import json

import pandas as pd
import pytest

from fs_resources import settings
from fs_resources.simulator.skab import import_skab, skab_files
from tests.ingest_runs import checks, clean_rows, materialize_clean, materialize_registry, metadata

SKAB = settings.skab_dir()
pytestmark = [
    pytest.mark.real_data,
    pytest.mark.skipif(
        not (SKAB / "valve1").is_dir(),
        reason=f"SKAB data not found at {SKAB}: get the data/ folder of the SKAB repository (waico/SKAB) and set FS_SKAB_DIR to it",
    ),
]


@pytest.mark.unit
def test_skab_import_maps_experiments_to_devices_and_labels_to_events(data_root):
    result = import_skab(SKAB, str(data_root))
    assert result.devices == len(skab_files(SKAB)) == 35
    assert result.rows == 46_806
    assert result.dates == ("2020-02-08", "2020-03-01", "2020-03-09")
    events = pd.read_csv(settings.maintenance_csv_path(str(data_root)))
    assert (events["event_type"] == "fault_start").sum() == 34
    # the first valve fault: 2020-03-09 10:24:33 Moscow time is 07:24:33 UTC
    first = events[(events["device_id"] == "skab-valve1-00") & (events["event_type"] == "fault_start")]
    assert first["event_time"].tolist() == ["2020-03-09T07:24:33Z"]


@pytest.mark.integration
def test_skab_day_ingests_at_its_native_one_second_rate(spark, resources, instance, data_root):
    import_skab(SKAB, str(data_root))
    materialize_registry(resources, instance)
    result = materialize_clean(resources, instance, "2020-03-09")
    assert result.success and checks(result)["check_accounting_identity"].passed
    md = metadata(result)
    valve_rows = sum(len(pd.read_csv(p, sep=";")) for p in skab_files(SKAB) if p.parent.name in ("valve1", "valve2"))
    assert md["raw_rows"] == valve_rows == md["clean_rows_added"] + md["quarantined_rows"] + md["duplicates_dropped"]
    assert md["quarantined_rows"] == 0
    rows = clean_rows(spark, "2020-03-09").where("device_id = 'skab-valve1-00'").orderBy("ts").limit(3).collect()
    assert [(b["ts"] - a["ts"]).total_seconds() for a, b in zip(rows, rows[1:])] == [1.0, 1.0]
    # negative gauge pressure is outside the contract's range: NULL with a flag, the row stays
    assert md["flagged_values_by_sensor"]["pressure_high"] > 0
    assert clean_rows(spark, "2020-03-09").where("temp_evaporator IS NOT NULL").count() == 0


@pytest.mark.unit
def test_the_skab_results_file_describes_the_current_anomaly_score():
    """The headline of bench/results/skab_auc.json re-measured on SKAB through the production kernel
    and scorer: a results file left behind by a change to either fails here."""
    from bench.skab_anomaly_auc import HEADLINE, RESULTS_FILE, VARIANTS, evaluate, readings_of, windows_of

    recorded = next(run["headline"] for run in json.loads(RESULTS_FILE.read_text())["runs"] if run["window_minutes"] == 1)
    features, stretch, fleet_only, flow, fitting = VARIANTS[HEADLINE]
    windows = {}
    for path in skab_files(SKAB):
        frame = windows_of(readings_of(path, with_flow=flow), 1)
        windows[frame["device_id"].iat[0]] = frame
    measured = evaluate(windows, features, stretch, fleet_only, **fitting)
    assert recorded["variant"] == HEADLINE
    for key in ("pooled_auc", "worst_experiment", "at_store_threshold", "healthy_out_of_fold", "per_experiment_auc"):
        assert measured[key] == recorded[key], key
