"""Online reads on a real Redis: liveness whatever properties are asked, large requests in bounded calls."""

from datetime import date, datetime, timezone

import pytest
import redis

from fs_domain.device import DEVICE
from fs_resources import online
from fs_resources.online import OnlineStore

pytestmark = pytest.mark.integration

HYDRATED_AT = datetime(2026, 1, 7, 1, 0, tzinfo=timezone.utc)


def _objects(ids: list[str]) -> dict[str, list]:
    n = len(ids)
    values = {
        "device_id": ids,
        "site_id": ["site-1"] * n,
        "model": ["m"] * n,
        "refrigerant": ["R404A"] * n,
        "install_date": [date(2020, 1, 1)] * n,
        "status": ["active"] * n,
        "avg_temperature_evaporator_24h": [-20.0 + i for i in range(n)],
        "avg_compressor_current_24h": [8.0] * n,
        "reading_count_24h": [1440] * n,
        # NULL until scores exist, for every device here.
        "latest_anomaly_score": [None] * n,
        "anomaly_top_features": [None] * n,
        "anomaly_top_pair": [None] * n,
        "anomaly_reference": [None] * n,
        "features_window_end": [datetime(2026, 1, 7, tzinfo=timezone.utc)] * n,
        "hydrated_at": [HYDRATED_AT] * n,
    }
    assert set(values) == set(DEVICE.property_names)
    return values


@pytest.fixture
def store(redis_server):
    # A database of its own on the session's server: flushing it leaves other modules' entries alone.
    client = redis.Redis.from_url(redis_server.rsplit("/", 1)[0] + "/7")
    client.flushdb()
    yield OnlineStore(client, "v1")
    client.flushdb()


def test_a_live_device_is_returned_when_the_last_requested_property_is_null(store):
    store.project(_objects(["dev-1", "dev-2"]), HYDRATED_AT, ttl_seconds=600)
    for ids in (["dev-1"], ["dev-1", "dev-2", "dev-missing"]):
        rows = store.get_online_features(ids, properties=["hydrated_at", "avg_temperature_evaporator_24h", "latest_anomaly_score"])
        assert rows[0] == {"hydrated_at": HYDRATED_AT, "avg_temperature_evaporator_24h": -20.0, "latest_anomaly_score": None}
    assert rows[2] is None


def test_a_large_request_is_read_in_bounded_calls_and_keeps_its_order(store, monkeypatch):
    ids = [f"dev-{i:03d}" for i in range(25)]
    store.project(_objects(ids), HYDRATED_AT, ttl_seconds=600)
    monkeypatch.setattr(online, "READ_CHUNK_KEYS", 4)
    calls = []
    read = store._read

    def counted(*args, **kwargs):
        calls.append(len(kwargs["keys"]))
        return read(*args, **kwargs)

    monkeypatch.setattr(store, "_read", counted)
    wanted = [*reversed(ids), "dev-missing"]
    rows = store.get_online_features(wanted, properties=["avg_temperature_evaporator_24h"])
    assert calls and max(calls) <= 4 and sum(calls) == len(wanted)
    assert [r and r["avg_temperature_evaporator_24h"] for r in rows] == [-20.0 + ids.index(d) for d in reversed(ids)] + [None]
