"""fs-sim: deterministic for a seed, with every failure mode the ingest layer must survive."""

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from fs_resources import settings
from fs_resources.simulator import cli, fleet
from fs_resources.simulator.fleet import (
    MALFORMED_DEVICE_IDS,
    UNKNOWN_DEVICE_ID,
    FleetSpec,
    build_profile,
    generate,
    seed_digest,
    simulate_day_with_gaps,
)

pytestmark = pytest.mark.unit

NO_FAULTS = fleet.Faults()


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


def test_every_silence_of_an_active_device_is_declared_as_an_expected_gap(tmp_path):
    spec = replace(FleetSpec.clean(devices=40, start=date(2026, 1, 5), days=2, seed=5), outage_probability=0.3, degrading_share=0.2)
    generate(spec, str(tmp_path))
    registry = pd.read_csv(settings.registry_csv_path(str(tmp_path)))
    reasons = set()
    for day in ("2026-01-05", "2026-01-06"):
        gaps = pd.read_csv(settings.expected_gaps_csv_path(day, str(tmp_path)), parse_dates=["gap_start", "gap_end"])
        reasons |= set(gaps["reason"])
        readings = pd.concat(pq.read_table(p).to_pandas() for p in sorted((tmp_path / "landing" / f"date={day}").glob("part-*.parquet")))
        minutes = pd.date_range(day, periods=1440, freq="min", tz="UTC")
        for device_id in registry.loc[registry["status"] == "active", "device_id"]:
            sent = minutes.isin(readings.loc[readings["device_id"] == device_id, "ts"])
            declared = np.zeros(len(minutes), dtype=bool)
            for start, end in gaps.loc[gaps["device_id"] == device_id, ["gap_start", "gap_end"]].itertuples(index=False):
                declared |= (minutes >= start) & (minutes < end)
            # Silent exactly while declared: no undeclared silence, and no reading inside a declared gap.
            assert (sent == ~declared).all(), f"{device_id} on {day}"
    assert reasons == {"outage", "compressor_silence"}


def test_live_readings_keep_the_outages_the_day_declares(tmp_path):
    spec = replace(FleetSpec.clean(devices=20, start=date(2026, 1, 5), days=1, seed=5), outage_probability=0.5)
    profile = build_profile(spec)
    whole = simulate_day_with_gaps(spec, profile, 0)
    parts = [simulate_day_with_gaps(spec, profile, 0, minute_range=(m, m + 5)) for m in range(0, 1440, 5)]
    assert all(p.gaps.equals(whole.gaps) for p in parts) and len(whole.gaps)
    in_parts = pd.concat([p.on_time for p in parts], ignore_index=True)
    assert sorted(zip(in_parts["device_id"], in_parts["ts"])) == sorted(zip(whole.on_time["device_id"], whole.on_time["ts"]))


def _landed(root) -> pd.DataFrame:
    files = sorted((root / "landing").glob("date=*/*.parquet"))
    return pd.concat([pq.read_table(p).to_pandas().assign(file=p.name) for p in files], ignore_index=True)


def _live(root, spec: FleetSpec, until: datetime, faults: fleet.Faults = NO_FAULTS) -> None:
    profile = fleet.build_profile(spec)
    sites = fleet.registry_frame(profile, spec).set_index("device_id")["site_id"]
    cli.catch_up(spec, profile, str(root), until, faults, sites, max_catch_up_days=3, declared=set())


def test_seed_until_a_minute_then_live_continues_without_gaps_or_duplicate_keys(tmp_path):
    # Seeded to 22:17 (exclusive), then live twice, the second across midnight: one reading per
    # device and minute from the first day's midnight to 00:42, each once.
    spec = FleetSpec.clean(devices=4, start=date(2026, 1, 5), days=2, seed=3)
    seeded = datetime(2026, 1, 6, 22, 17, tzinfo=UTC)
    fleet.generate(spec, str(tmp_path), until=seeded)
    assert fleet.simulated_until(str(tmp_path)) == seeded
    _live(tmp_path, spec, datetime(2026, 1, 6, 23, 5, tzinfo=UTC))
    end = datetime(2026, 1, 7, 0, 42, tzinfo=UTC)
    _live(tmp_path, spec, end)
    assert fleet.simulated_until(str(tmp_path)) == end

    readings = _landed(tmp_path)
    assert not readings.duplicated(["device_id", "ts"]).any()
    minutes = pd.date_range(pd.Timestamp(spec.start, tz="UTC"), pd.Timestamp(end), freq="min", inclusive="left")
    for _, ts in readings.groupby("device_id")["ts"]:
        assert ts.sort_values().reset_index(drop=True).equals(pd.Series(minutes).dt.as_unit(ts.dt.unit)), "a minute is missing"
    names = sorted(p.name for p in (tmp_path / "landing").glob("date=*/live-*.parquet"))
    assert names == ["live-0000-0042.parquet", "live-0000-2217.parquet", "live-2217-2305.parquet", "live-2305-2400.parquet"]


def test_a_day_written_in_parts_is_the_day_written_whole(tmp_path):
    # Every transport fault on: outages, out-of-range cells and foreign ids fall where the whole day
    # puts them, whatever the parts (a part drawn alone once repeated its faults in every part).
    spec = FleetSpec(devices=30, start=date(2026, 1, 5), days=1, seed=4, outage_probability=0.5)
    whole, _, _ = fleet.simulate_day(spec, fleet.build_profile(spec), 0)
    profile = fleet.build_profile(spec)
    parts = [fleet.simulate_day(spec, profile, 0, 0, (a, b))[0] for a, b in ((0, 1), (1, 2), (2, 600), (600, 601), (601, 1440))]

    def readings(frame: pd.DataFrame) -> pd.DataFrame:  # duplicate deliveries are drawn per part
        return frame.drop_duplicates().sort_values(["device_id", "ts"]).reset_index(drop=True)

    pd.testing.assert_frame_equal(readings(pd.concat(parts)), readings(whole))


def test_live_faults_silence_a_gateway_and_drift_a_sensor_from_their_start(tmp_path):
    spec = FleetSpec.clean(devices=60, start=date(2026, 1, 5), days=1, seed=3)
    fleet.generate(spec, str(tmp_path), until=datetime(2026, 1, 5, 10, 0, tzinfo=UTC))
    baseline = tmp_path / "baseline"
    fleet.generate(spec, str(baseline), until=datetime(2026, 1, 5, 10, 0, tzinfo=UTC))
    since = datetime(2026, 1, 5, 10, 30, tzinfo=UTC)
    drift = fleet.Drift("site-0001", "temp_evaporator", 4.0, since)
    _live(tmp_path, spec, datetime(2026, 1, 5, 11, 30, tzinfo=UTC), fleet.Faults(frozenset({"site-0003"}), (drift,)))
    _live(baseline, spec, datetime(2026, 1, 5, 11, 30, tzinfo=UTC))

    faulty, normal = (_landed(r).query("file.str.startswith('live-1000')").set_index(["device_id", "ts"]) for r in (tmp_path, baseline))
    sites = fleet.registry_frame(fleet.build_profile(spec), spec).set_index("device_id")["site_id"]
    silenced = sites[sites == "site-0003"].index
    assert not faulty.index.get_level_values("device_id").isin(silenced).any()
    assert normal.index.get_level_values("device_id").isin(silenced).any()
    shift = (faulty["temp_evaporator"] - normal["temp_evaporator"].reindex(faulty.index)).dropna()
    site_of = shift.index.get_level_values("device_id").map(sites)
    hours = (shift.index.get_level_values("ts") - pd.Timestamp(since)).total_seconds() / 3600
    expected = np.where(site_of == "site-0001", 4.0 * np.clip(hours, 0, None), 0.0)
    np.testing.assert_allclose(shift.to_numpy(), expected, atol=1e-9)
    assert shift.max() == pytest.approx(4.0 * 59 / 60)


def test_cli_seeds_until_now_and_live_refuses_another_fleet(tmp_path, capsys):
    root = str(tmp_path)
    before = datetime.now(UTC)
    assert cli.main(["--data-root", root, "generate", "--devices", "3", "--days", "1", "--until-now", "--clean"]) == 0
    until = fleet.simulated_until(root)
    # The current minute's reading is taken: the readings end with it.
    assert before.replace(second=0, microsecond=0) + timedelta(minutes=1) <= until <= datetime.now(UTC) + timedelta(minutes=1)
    assert _landed(tmp_path)["ts"].max() == pd.Timestamp(until - timedelta(minutes=1))
    assert cli.main(["--data-root", root, "live", "--iterations", "1", "--interval", "0"]) == 0
    assert fleet.simulated_until(root) >= until
    with pytest.raises(SystemExit, match="fleet of 3 devices"):
        cli.main(["--data-root", root, "live", "--devices", "5", "--iterations", "1", "--interval", "0"])
    with pytest.raises(SystemExit, match="no site site-0099"):
        cli.main(["--data-root", root, "live", "--silence", "site-0099", "--iterations", "1", "--interval", "0"])
