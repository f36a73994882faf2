"""Every asset check of the code location, found from its definitions (a check added later is covered
without naming it here), run on the data of a real pipeline: each evaluation states its verdict in the
one shape (observed, threshold, comparison, unit, what to do, asset, run) and its what-to-do links a
section of the operator guide that exists."""

from __future__ import annotations

from datetime import timedelta

import dagster as dg
import pytest
import redis

from fs_assets.features.assets import feature_assets
from fs_assets.ontology.assets import ontology_assets
from tests.check_runs import check_definitions, code_location, guide_anchors, run_checks_alone, shape_problem
from tests.conftest import SIM_START
from tests.ingest_runs import materialize_clean, pipeline_resources, range_tags, train_and_monitor

pytestmark = pytest.mark.integration

DAYS = [(SIM_START + timedelta(days=i)).isoformat() for i in range(3)]
REDIS_DB = 9  # a database of the session's server of its own: the projection's keys stay out of other tests' way


@pytest.fixture(scope="module")
def pipeline(spark, redis_server, ingested_fleet, tmp_path_factory):
    """A copy of the session's ingested fleet (six devices, three days), the last day's clean step run
    again (it evaluates its own checks), every feature size, each model trained, referenced and
    promoted, scores and drift reports, and the `Device` objects projected into Redis."""
    assert list(ingested_fleet.days) == DAYS
    root = ingested_fleet.copy_to(tmp_path_factory.mktemp("check_verdicts") / "data")
    url = f"{redis_server.rsplit('/', 1)[0]}/{REDIS_DB}"
    redis.Redis.from_url(url).flushdb()
    with pytest.MonkeyPatch.context() as patch, dg.instance_for_test() as instance:
        patch.setenv("FS_DATA_ROOT", str(root))
        resources = pipeline_resources(url)
        assert materialize_clean(resources, instance, DAYS[-1], with_checks=False).success
        assert dg.materialize(feature_assets, resources=resources, instance=instance, tags=range_tags(DAYS[0], DAYS[-1])).success
        train_and_monitor(resources, instance, DAYS[0], DAYS[-1])
        assert dg.materialize(ontology_assets, resources=resources, instance=instance).success
        yield code_location(resources), instance
    redis.Redis.from_url(url).flushdb()


def _partition_to_judge(partitions_def: dg.PartitionsDefinition | None) -> str | None:
    if partitions_def is None:
        return None
    if isinstance(partitions_def, dg.TimeWindowPartitionsDefinition):
        return DAYS[-1]
    return partitions_def.get_partition_keys()[0]


def _recorded_evaluations(instance: dg.DagsterInstance, key: dg.AssetCheckKey) -> list[dg.AssetCheckEvaluation]:
    history = instance.event_log_storage.get_asset_check_execution_history(key, limit=100)
    events = [r.event.dagster_event for r in history if r.event is not None and r.event.dagster_event is not None]
    return [e.event_specific_data for e in events if e.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION]


def test_every_check_of_the_code_location_states_its_verdict_and_links_the_operator_guide(pipeline):
    defs, instance = pipeline
    import definitions

    every_check = definitions.defs.get_repository_def().asset_graph.asset_check_keys
    assert defs.get_repository_def().asset_graph.asset_check_keys == every_check
    # Checks that run as ops of their own run here, grouped by their partitions (one run per group);
    # those evaluated by their asset's own step ran when the pipeline materialized it.
    groups: list[tuple[dg.PartitionsDefinition | None, list]] = []
    for checks_def in check_definitions(defs):
        group = next((g for g in groups if g[0] == checks_def.partitions_def), None)
        if group is None:
            groups.append(group := (checks_def.partitions_def, []))
        group[1].append(checks_def)
    crashed = {}
    for partitions_def, checks in groups:
        result = run_checks_alone(defs, checks, instance, _partition_to_judge(partitions_def))
        crashed |= {e.step_key: e.event_specific_data.error.message.strip() for e in result.get_step_failure_events()}

    anchors = guide_anchors()
    problems = {}
    for key in sorted(every_check, key=lambda k: k.to_user_string()):
        recorded = _recorded_evaluations(instance, key)
        if not recorded:
            problems[key.to_user_string()] = "never evaluated"
        for evaluation in recorded:
            if problem := shape_problem(evaluation.metadata, key.asset_key, anchors, evaluation.partition):
                problems[key.to_user_string()] = problem
    assert problems == {}, f"{problems}\nsteps that raised: {crashed}"


def test_every_real_check_failing_would_reach_on_call_with_its_value_and_threshold(pipeline):
    """The real checks' recorded evaluations, each taken as failing, through the alert router's own
    rule: every page it would send says what was observed against which threshold."""
    import time

    from dagster_shared.record import copy as copy_record

    from fs_sensors.alert_routing_sensor import Incidents, Lineage, RoutingState, RunFacts, _evaluation_alerts

    defs, instance = pipeline
    repository = defs.get_repository_def()
    missing, routed = {}, set()
    for key in sorted(repository.asset_graph.asset_check_keys, key=lambda k: k.to_user_string()):
        for evaluation in _recorded_evaluations(instance, key):
            failing = copy_record(evaluation, passed=False, severity=dg.AssetCheckSeverity.ERROR)
            run = instance.get_run_by_id(evaluation.target_materialization_data.run_id) if evaluation.target_materialization_data else None
            facts = RunFacts(run or dg.DagsterRun(job_name="checks", run_id="r"), "checks", {key.asset_key.to_user_string()},
                             evaluation.partition, time.time(), time.time())  # fmt: skip
            incidents = Incidents(RoutingState(None), Lineage(repository))
            alerts = [a for a in _evaluation_alerts(incidents, facts, time.time(), failing) if a.action == "trigger"]
            routed.add(key)
            if not alerts or any(a.observed is None or a.threshold is None or "expected" not in a.summary for a in alerts):
                missing[key.to_user_string()] = [a.summary for a in alerts]
    assert missing == {} and routed == set(repository.asset_graph.asset_check_keys)


def test_a_site_check_of_days_long_past_judges_no_newest_window_so_its_pass_resolves_no_later_day(pipeline):
    """The real `check_site_anomalies` on the pipeline's January days: its windows are past the age it
    judges, so its verdict does not claim the newest state, and the router's rule that a later day's
    pass answers an earlier day's failure (`Verdict.judges_newest`) cannot fire from a backfill."""
    from fs_domain.verdicts import Verdict

    _, instance = pipeline
    key = dg.AssetCheckKey(dg.AssetKey("anomaly_scores"), "check_site_anomalies")
    verdicts = [Verdict.from_metadata(dict(e.metadata)) for e in _recorded_evaluations(instance, key)]
    assert verdicts and all(v is not None and not v.judges_newest for v in verdicts), verdicts


def test_every_delta_table_the_pipeline_wrote_is_in_the_catalog_maintenance_reads(pipeline):
    """Maintenance compacts, vacuums and expires the tables of `fs_domain.tables.every_table`: a table
    written by any asset but missing there would grow small files and old versions for ever."""
    import os

    from fs_domain.tables import every_table
    from fs_resources.settings import tables_root

    root = tables_root()
    written = sorted(os.path.relpath(folder, root) for folder, subfolders, _ in os.walk(root) if "_delta_log" in subfolders)
    assert written and set(written) <= set(every_table()), sorted(set(written) - set(every_table()))
