"""A site event (`check_site_anomalies`): most of one site's devices beyond their normal in the same
window pages; one device alone, or windows too sparse to trust, never do."""

from __future__ import annotations

import pandas as pd
import pytest

from fs_checks.score_checks import SITE_EVENT_MODELS, site_events
from fs_domain.models import ANOMALY_THRESHOLD, COMPRESSOR_FAILURE_1H, DEVICE_HEALTH_1D, SITE_EVENT_MIN_DEVICES

pytestmark = pytest.mark.unit

END = pd.Timestamp("2026-12-06 10:00")
HIGH, LOW = ANOMALY_THRESHOLD + 2.0, 1.0


def newest(site: str, scores: list[float], notes: list[str | None] | None = None, top: str = "temp_evaporator_mean") -> pd.DataFrame:
    return pd.DataFrame(
        {
            "model": COMPRESSOR_FAILURE_1H.name,
            "site_id": site,
            "device_id": [f"{site}-dev-{i}" for i in range(len(scores))],
            "window_end": END,
            "anomaly_score": scores,
            "top_feature": top,
            "confidence_notes": notes or [None] * len(scores),
        }
    )


def test_most_of_a_site_beyond_its_normal_is_an_event_naming_the_feature_and_its_sensor():
    frame = pd.concat([newest("site-a", [HIGH] * 4 + [LOW]), newest("site-b", [HIGH] + [LOW] * 4)], ignore_index=True)
    sites = site_events(frame).set_index("site_id")
    assert bool(sites.loc["site-a", "event"]) and sites.loc["site-a", "beyond_threshold"] == 4 and sites.loc["site-a", "share"] == 0.8
    assert sites.loc["site-a", "top_feature"] == "temp_evaporator_mean" and sites.loc["site-a", "sensor"] == "temp_evaporator"
    # One device beyond its normal is a maintenance matter, not a page.
    assert not sites.loc["site-b", "event"]


def test_too_few_devices_or_sparse_windows_make_no_event():
    few = newest("site-c", [HIGH] * (SITE_EVENT_MIN_DEVICES - 1))
    sparse = newest("site-d", [HIGH] * 4 + [LOW], notes=["sparse"] * 3 + [None, None])
    sites = site_events(pd.concat([few, sparse], ignore_index=True)).set_index("site_id")
    assert not sites["event"].any()
    # The sparse windows are not counted among those scored either.
    assert sites.loc["site-d", "devices_scored"] == 2


def test_only_hourly_windows_are_judged_for_site_events():
    assert SITE_EVENT_MODELS == [COMPRESSOR_FAILURE_1H.name] and DEVICE_HEALTH_1D.name not in SITE_EVENT_MODELS
