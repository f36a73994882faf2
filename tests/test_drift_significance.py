"""PSI counts as drift only when chance cannot explain it: a small healthy fleet never drifts by luck."""

import numpy as np
import pandas as pd
import pytest

from fs_assets.monitoring.drift import STATUS_ERROR, STATUS_OK, drift_rows, fleet_wide
from fs_assets.training.datasets import feature_statistics

FEATURES = [f"f{i}" for i in range(22)]


def _reference(n: int, rng) -> dict[str, dict]:
    return {f: feature_statistics(pd.Series(rng.normal(0.2, 0.003, n))) for f in FEATURES}


@pytest.mark.unit
def test_a_healthy_day_of_a_small_fleet_is_not_drift_against_a_one_day_reference():
    """The paging drill's case: 50 devices, a reference of one day's 50 windows, another healthy day."""
    rng = np.random.default_rng(4)
    flagged = 0
    for _ in range(20):
        reference = _reference(50, rng)
        day = pd.DataFrame({f: rng.normal(0.2, 0.003, 47) for f in FEATURES})
        rows = drift_rows(day, reference, FEATURES)
        # PSI alone crosses the thresholds by chance on most such days...
        assert (rows["psi"] > 0.25).any() or (rows["psi"] > 0.1).sum() >= 3
        flagged += int((rows["psi_status"] != STATUS_OK).sum())
        assert not fleet_wide(rows)
    # ...the test of chance keeps all but the rarest of 440 feature-days from counting.
    assert flagged <= 1


@pytest.mark.unit
def test_a_real_shift_is_drift_at_any_fleet_size():
    rng = np.random.default_rng(5)
    for devices in (47, 100_000):
        reference = _reference(max(50, devices // 10), rng)
        day = pd.DataFrame({f: rng.normal(0.2 + (0.006 if f in FEATURES[:6] else 0.0), 0.003, devices) for f in FEATURES})
        rows = drift_rows(day, reference, FEATURES).set_index("feature")
        assert (rows.loc[FEATURES[:6], "psi_status"] == STATUS_ERROR).all(), rows.loc[FEATURES[:6], ["psi", "psi_p_value"]]
        assert (rows.loc[FEATURES[6:], "psi_status"] == STATUS_OK).mean() > 0.9
        assert fleet_wide(rows)


@pytest.mark.unit
def test_a_day_in_progress_is_reported_but_judged_once_complete():
    from datetime import date

    from fs_checks.drift_checks import drift_verdict, judge_drift

    today = date(2026, 12, 6)
    rows = pd.DataFrame(
        {
            "report_date": [today, date(2026, 12, 5)],
            "model": ["compressor_failure_1h"] * 2,
            "feature": ["temp_condenser_mean"] * 2,
            "psi": [0.36, 0.02],
            "psi_status": [STATUS_ERROR, STATUS_OK],
            "fleet_wide_event": [False, False],
        }
    )
    # The first hours' condenser against whole days: reported, not judged.
    report, moved, significant, fleet, in_progress = judge_drift(rows, today)
    assert moved.empty and significant.empty and not fleet and in_progress == ["2026-12-06"]
    # The day before, complete and healthy, was judged: its pass answers a drift paged on an earlier day.
    assert drift_verdict(report, moved, significant, fleet).judges_newest
    # The same once the day is complete.
    report, moved, significant, fleet, in_progress = judge_drift(rows, date(2026, 12, 7))
    assert list(significant["report_date"]) == [today] and in_progress == []
    # Only the day in progress: nothing judged, so a pass would answer nothing.
    assert drift_verdict(*judge_drift(rows[rows["report_date"] == today], today)[:4]).judges_newest is None
