"""The whole code location loads, validates and names what DESIGN.md promises."""

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from definitions import defs

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.unit
def test_code_location_lists_its_assets_checks_jobs_and_sensors():
    repo = defs.get_repository_def()
    keys = {k.to_user_string() for k in repo.asset_graph.get_all_asset_keys()}
    assert {
        "raw_sensor_readings",
        "device_registry",
        "clean_sensor_readings",
        "device_features_15m",
        "device_features_1h",
        "device_features_1d",
        "device_objects",
        "device_online_store",
        "maintenance_events",
        "training_dataset",
        "feature_reference_snapshot",
        "anomaly_scores",
        "feature_drift_report",
    } <= keys
    checks = {k.name for k in repo.asset_graph.asset_check_keys}
    assert {"check_accounting_identity", "check_clean_key_unique", "check_physical_ranges", "check_sensor_null_fraction"} <= checks
    assert {
        "check_online_reconciliation",
        "check_prehydration_lag",
        "check_online_key_count",
        "check_feature_drift",
        "check_null_fraction_drift",
        "freshness_check",
    } <= checks
    assert {"clean_readings_job", "device_registry_job", "prehydration_job", "reconciliation_job"} <= {j.name for j in repo.get_all_jobs()}
    assert {
        "landing_zone_sensor",
        "feature_automation_sensor",
        "prehydration_sensor",
        "freshness_checks_sensor",
        "alert_routing_sensor",
    } <= {s.name for s in repo.sensor_defs}
    assert {"prehydration_schedule", "reconciliation_schedule", "online_store_watch_schedule"} <= {s.name for s in repo.schedule_defs}
    clean = repo.asset_graph.get(dg.AssetKey("clean_sensor_readings"))
    assert clean.partitions_def is not None and clean.backfill_policy is not None
    assert clean.freshness_policy is not None
    assert {dg.AssetKey("raw_sensor_readings"), dg.AssetKey("device_registry")} <= set(clean.parent_keys)


@pytest.mark.e2e
def test_dg_check_defs_passes_and_nothing_of_ours_is_superseded_or_deprecated(tmp_path):
    env = dict(
        os.environ, DAGSTER_HOME=str(tmp_path), VIRTUAL_ENV=str(Path(sys.executable).parents[1]), PYTHONWARNINGS="always"
    )  # fmt: skip
    done = subprocess.run(
        [str(Path(sys.executable).parent / "dg"), "check", "defs"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    output = done.stderr + done.stdout
    assert done.returncode == 0, output[-3000:]
    assert "All definitions loaded successfully" in output
    # Loading our definitions is what would emit them, wherever the warning says it comes from.
    loaded = subprocess.run(
        [sys.executable, "-W", "always", "-c", "import definitions"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    ours = [line for line in loaded.stderr.splitlines() if "SupersessionWarning" in line or "DeprecationWarning" in line]
    assert ours == [], ours


@pytest.mark.unit
def test_instance_yaml_limits_each_delta_pool_to_one_writer(tmp_path):
    import shutil

    shutil.copy(ROOT / "dagster_home" / "dagster.yaml", tmp_path / "dagster.yaml")
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        settings = instance.get_concurrency_config()
        assert settings.pool_config.default_pool_limit == 1
        limits = settings.run_queue_config.tag_concurrency_limits
        assert {"key": "fs/concurrency_key", "value": "prehydration", "limit": 1} in limits
    pools = {a.node_def.pool for a in defs.get_repository_def().asset_graph.assets_defs if a.keys}
    assert {"delta_clean_sensor_readings", "delta_device_registry"} <= pools


@pytest.mark.unit
def test_a_killed_or_hung_run_gives_back_its_slots_and_every_job_has_a_time_limit(tmp_path):
    import shutil

    from fs_domain.run_limits import MAX_RUNTIME_TAG
    from fs_sensors.feature_automation_sensor import feature_automation_sensor
    from fs_sensors.freshness_checks_sensor import FRESHNESS_CHECK_RUN_TAGS

    shutil.copy(ROOT / "dagster_home" / "dagster.yaml", tmp_path / "dagster.yaml")
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        monitoring = instance.run_monitoring_settings
        assert instance.run_monitoring_enabled and instance.run_retries_enabled
        assert 0 < monitoring["free_slots_after_run_end_seconds"] <= monitoring["poll_interval_seconds"] * 4
        assert instance.run_monitoring_max_runtime_seconds > 0
    jobs = [j for j in defs.get_repository_def().get_all_jobs() if not j.name.startswith("__")]
    assert {j.name for j in jobs if MAX_RUNTIME_TAG not in j.tags} == set()
    # Runs launched with an asset selection rather than a job carry the tag from their sensor.
    assert MAX_RUNTIME_TAG in feature_automation_sensor.run_tags and MAX_RUNTIME_TAG in FRESHNESS_CHECK_RUN_TAGS
    limits = {j.name: int(j.tags[MAX_RUNTIME_TAG]) for j in jobs}
    # The clean run, which every later stage waits on, may not outlast the backstop for untagged runs.
    assert limits["clean_readings_job"] < monitoring["max_runtime_seconds"]


@pytest.mark.unit
def test_a_freshness_check_run_never_waits_for_a_spark_run(tmp_path):
    """Runs starting a Spark session are two at most; a run slot stays free for those starting none
    (freshness checks, the self-test), so a page is not held in the queue behind a long clean run."""
    import shutil

    from fs_domain.run_limits import SPARK_RUN_TAG
    from fs_sensors.feature_automation_sensor import feature_automation_sensor
    from fs_sensors.freshness_checks_sensor import FRESHNESS_CHECK_RUN_TAGS

    shutil.copy(ROOT / "dagster_home" / "dagster.yaml", tmp_path / "dagster.yaml")
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        runs = instance.get_settings("concurrency")["runs"]
    (spark_limit,) = [t["limit"] for t in runs["tag_concurrency_limits"] if t["key"] == SPARK_RUN_TAG and t["value"] == "true"]
    assert spark_limit < runs["max_concurrent_runs"]
    jobs = {j.name: j for j in defs.get_repository_def().get_all_jobs() if not j.name.startswith("__")}
    spark_free = {"alert_path_self_test_job", "online_store_watch_job", "backfill_preview_job"} & set(jobs)
    assert spark_free and all(SPARK_RUN_TAG not in jobs[name].tags for name in spark_free)
    assert all(jobs[name].tags.get(SPARK_RUN_TAG) == "true" for name in set(jobs) - spark_free), sorted(set(jobs) - spark_free)
    assert SPARK_RUN_TAG not in FRESHNESS_CHECK_RUN_TAGS and feature_automation_sensor.run_tags[SPARK_RUN_TAG] == "true"


@pytest.mark.unit
def test_scheduled_and_sensor_prehydration_share_one_concurrency_key():
    from fs_sensors.online_store_schedules import reconciliation_schedule
    from fs_sensors.prehydration_schedule import prehydration_schedule, prehydration_sensor

    repo = defs.get_repository_def()
    (sensor_job,) = [repo.get_job(t.job_name) for t in prehydration_sensor.targets]
    schedule_job = repo.get_job(prehydration_schedule.job_name)
    reconciliation = repo.get_job(reconciliation_schedule.job_name)
    assert sensor_job is schedule_job
    assert schedule_job.tags["fs/concurrency_key"] == reconciliation.tags["fs/concurrency_key"] == "prehydration"


@pytest.mark.unit
def test_device_object_page_is_generated_from_the_object_type():
    from fs_domain.device import reference_markdown

    assert (ROOT / "docs" / "device_object.md").read_text() == reference_markdown(), "docs/device_object.md is stale: run `make docs`"


@pytest.mark.unit
def test_feature_reference_page_is_generated_from_the_registry():
    from fs_domain.features import FEATURE_SET_VERSIONS, reference_markdown

    page = (ROOT / "docs" / "features.md").read_text()
    assert page == reference_markdown(FEATURE_SET_VERSIONS[-1]), "docs/features.md is stale: run `make docs`"


@pytest.mark.unit
def test_feature_assets_show_registry_descriptions_in_the_ui():
    from fs_domain.features import FEATURES

    repo = defs.get_repository_def()
    for name in ("device_features_15m", "device_features_1h", "device_features_1d"):
        spec = repo.asset_graph.get(dg.AssetKey(name))
        schema = spec.metadata["dagster/column_schema"]
        schema = getattr(schema, "schema", schema)
        described = {c.name: c.description for c in schema.columns}
        v1 = [f for f in FEATURES if f.added_in == "v1"]
        assert v1 and all(described[f.name] and f.description in described[f.name] for f in v1)
        assert spec.backfill_policy is not None and spec.freshness_policy is not None


@pytest.mark.unit
def test_extra_spark_settings_come_from_fs_spark_conf_over_the_defaults(monkeypatch):
    from fs_resources.spark import DeltaSparkResource

    monkeypatch.setenv("FS_SPARK_CONF", '{"spark.sql.shuffle.partitions": 9, "spark.hadoop.fs.s3a.path.style.access": true}')
    conf = DeltaSparkResource(spark_config={"spark.sql.shuffle.partitions": "3"}).session_conf()
    # The resource's own settings win over the environment's, which win over the defaults.
    assert conf["spark.sql.shuffle.partitions"] == "3" and conf["spark.hadoop.fs.s3a.path.style.access"] == "true"
    monkeypatch.setenv("FS_SPARK_CONF", "spark.sql.shuffle.partitions=9")
    with pytest.raises(ValueError, match="FS_SPARK_CONF must be a JSON object"):
        DeltaSparkResource().session_conf()
    monkeypatch.setenv("FS_SPARK_CONF", '{"shuffle.partitions": 9}')
    with pytest.raises(ValueError, match="keys are Spark settings"):
        DeltaSparkResource().session_conf()


@pytest.mark.unit
def test_the_hourly_and_weekly_online_runs_wait_for_something_to_project():
    """A fresh store catching up has no features at the hour: a pre-hydration (or a reconciliation)
    run would fail on the missing table and page for a healthy start."""
    from fs_assets.features.assets import device_features_1d
    from fs_checks.online_checks import ONLINE_STORE
    from fs_sensors.online_store_schedules import reconciliation_schedule
    from fs_sensors.prehydration_schedule import prehydration_schedule

    with dg.instance_for_test() as instance:
        context = dg.build_schedule_context(instance=instance)
        assert isinstance(prehydration_schedule.evaluate_tick(context).skip_message, str)
        assert isinstance(reconciliation_schedule.evaluate_tick(context).skip_message, str)
        instance.report_runless_asset_event(dg.AssetMaterialization(device_features_1d.key, partition="2026-12-05"))
        instance.report_runless_asset_event(dg.AssetMaterialization(ONLINE_STORE))
        assert len(prehydration_schedule.evaluate_tick(context).run_requests) == 1
        assert len(reconciliation_schedule.evaluate_tick(context).run_requests) == 1


@pytest.mark.unit
def test_no_second_prehydration_is_requested_while_one_waits_in_the_queue():
    """A waiting pre-hydration run projects the newest snapshot when it starts: another request adds
    only a run to the queue (they piled up behind a long one on a busy machine)."""
    from fs_assets.features.assets import device_features_1d
    from fs_sensors.prehydration_schedule import prehydration_job, prehydration_schedule

    with dg.instance_for_test() as instance:
        context = dg.build_schedule_context(instance=instance)
        instance.report_runless_asset_event(dg.AssetMaterialization(device_features_1d.key, partition="2026-12-05"))
        queued = dg.DagsterRun(job_name=prehydration_job.name, run_id="waiting", status=dg.DagsterRunStatus.NOT_STARTED)
        instance.add_run(queued)
        assert "waits in the queue" in prehydration_schedule.evaluate_tick(context).skip_message
        instance.delete_run("waiting")
        instance.add_run(queued.with_status(dg.DagsterRunStatus.STARTED))
        assert len(prehydration_schedule.evaluate_tick(context).run_requests) == 1
