"""fs-sim: deterministic for a seed, with every failure mode the ingest layer must survive."""

from datetime import date

import pandas as pd
import pyarrow.parquet as pq
import pytest

from fs_resources import settings
from fs_resources.simulator import cli
from fs_resources.simulator.fleet import MALFORMED_DEVICE_IDS, UNKNOWN_DEVICE_ID, FleetSpec, generate, seed_digest

pytestmark = pytest.mark.unit


def test_same_seed_same_landing_zone_other_seed_differs(tmp_path):
    spec = FleetSpec(devices=10, start=date(2026, 1, 5), days=2, seed=3)
    generate(spec, str(tmp_path / "a"))
    generate(spec, str(tmp_path / "b"))
    generate(FleetSpec(devices=10, start=date(2026, 1, 5), days=2, seed=4), str(tmp_path / "c"))
    assert seed_digest(str(tmp_path / "a")) == seed_digest(str(tmp_path / "b"))
    assert seed_digest(str(tmp_path / "a")) != seed_digest(str(tmp_path / "c"))


def test_failure_modes_are_present(tmp_path):
    spec = FleetSpec(devices=60, start=date(2026, 1, 5), days=3, seed=5, degrading_share=0.1, outage_probability=0.3, late_outage_share=1.0)
    totals = generate(spec, str(tmp_path))
    assert totals["late_files"] == 2
    day1 = tmp_path / "landing" / "date=2026-01-05"
    assert (day1 / "late-2026-01-06.parquet").exists() and (day1 / "resend-0000.parquet").exists()
    frame = pd.concat([pq.read_table(p).to_pandas() for p in sorted(day1.glob("*.parquet"))])
    assert frame.duplicated(["device_id", "ts"]).sum() > 0
    assert (frame["temp_condenser"] == 9999.0).any()
    assert frame["pressure_high"].isna().any() or frame["pressure_high"].abs().eq(float("inf")).any()
    assert {UNKNOWN_DEVICE_ID, *MALFORMED_DEVICE_IDS} <= set(frame["device_id"])
    events = pd.read_csv(settings.maintenance_csv_path(str(tmp_path)))
    assert (events["event_type"] == "failure").any()
    devices = pd.read_csv(settings.registry_csv_path(str(tmp_path)))
    assert len(devices) == 60 and set(devices["status"]) <= {"active", "retired", "maintenance"}


def test_cli_generate_if_empty_and_live_once(tmp_path, capsys):
    root = str(tmp_path)
    assert cli.main(["--data-root", root, "generate", "--devices", "3", "--start", "2026-01-05", "--days", "1", "--clean"]) == 0
    assert cli.main(["--data-root", root, "generate", "--if-empty", "--devices", "3"]) == 0
    assert "already holds readings" in capsys.readouterr().out
    assert cli.main(["--data-root", root, "live", "--devices", "3", "--iterations", "1", "--interval", "0"]) == 0
    assert list((tmp_path / "landing").glob("date=*/live-*.parquet"))


def test_cli_rejects_a_bad_date(capsys):
    with pytest.raises(SystemExit):
        cli.main(["generate", "--start", "05/01/2026"])
    assert "YYYY-MM-DD" in capsys.readouterr().err
