"""The quarantine's volume is watched: a flood of one reason pages, a healthy simulated day passes."""

import dagster as dg
import pandas as pd
import pytest

from fs_domain.contract import QUARANTINE_SHARE
from fs_domain.verdicts import Verdict
from fs_resources.simulator.fleet import FleetSpec, generate
from tests.conftest import SIM_START
from tests.ingest_runs import checks, materialize_clean, materialize_registry
from tests.landing_files import readings, registry, write_readings

pytestmark = pytest.mark.integration

DAY = SIM_START.isoformat()


def test_a_flood_of_unknown_devices_pages_with_its_share_and_threshold(resources, instance, data_root):
    registry(data_root, ["dev-a"])
    strangers = pd.concat([readings(f"dev-x{i}", SIM_START, range(0, 100)) for i in range(3)])
    write_readings(data_root, SIM_START, "a.parquet", pd.concat([readings("dev-a", SIM_START, range(0, 1200)), strangers]))
    materialize_registry(resources, instance)
    share = checks(materialize_clean(resources, instance, DAY))["check_quarantine_share"]
    assert not share.passed and share.severity == dg.AssetCheckSeverity.ERROR
    verdict = Verdict.from_metadata(share.metadata)
    assert verdict.observed == pytest.approx(300 / 1500) and verdict.threshold == QUARANTINE_SHARE.error
    assert verdict.partition == DAY and "operator_guide.md#clean-readings-quarantine-share" in verdict.what_to_do
    assert share.metadata["worst_reason"].value == "unknown_device"


def test_a_healthy_simulated_day_passes(resources, instance, data_root):
    # The simulator's own faults (foreign and malformed ids, duplicates, out-of-range values) on a
    # small fleet, where its foreign readings weigh the most.
    generate(FleetSpec(devices=3, start=SIM_START, days=1, seed=4), str(data_root))
    materialize_registry(resources, instance)
    share = checks(materialize_clean(resources, instance, DAY))["check_quarantine_share"]
    assert share.passed, share.description
    assert 0 < Verdict.from_metadata(share.metadata).observed < QUARANTINE_SHARE.warn
