"""Training sets: entity rows sampled per device, labels from maintenance events, features point in time."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from fs_assets.timestamps import instant


def sample_entities(device_ids: list[str], start: datetime, end: datetime, every: timedelta) -> pd.DataFrame:
    """Every device at `start + every, start + 2 every, ...` up to and including `end` (UTC)."""
    times = pd.date_range(pd.Timestamp(start) + every, pd.Timestamp(end), freq=every, tz="UTC").astype("datetime64[us, UTC]")
    ids = np.repeat(np.asarray(sorted(device_ids), dtype=object), len(times))
    return pd.DataFrame({"device_id": ids, "event_time": np.tile(times.to_numpy(), len(device_ids))}).assign(
        event_time=lambda f: pd.to_datetime(f["event_time"], utc=True).astype("datetime64[us, UTC]")
    )


def label_entities(entities: pd.DataFrame, events: pd.DataFrame, horizon: timedelta, event_types: tuple[str, ...]) -> pd.DataFrame:
    """`label` = 1 when an event of `event_types` falls in (event_time, event_time + horizon];
    `hours_to_event` = hours until the next such event (NaN past the horizon). Rows keep their order.
    Event times without a zone (as Spark hands them over, in its UTC session) are taken as UTC."""
    failures = events[events["event_type"].isin(event_types)][["device_id", "event_time"]].rename(columns={"event_time": "next_event"})
    failures = failures.assign(
        device_id=failures["device_id"].astype(object),
        next_event=pd.to_datetime(failures["next_event"], utc=True).astype("datetime64[us, UTC]"),
    )
    left = entities[["device_id", "event_time"]].assign(_row=np.arange(len(entities)), device_id=entities["device_id"].astype(object))
    joined = (
        pd.merge_asof(
            left.sort_values("event_time", kind="stable"),
            failures.sort_values("next_event", kind="stable"),
            left_on="event_time",
            right_on="next_event",
            by="device_id",
            direction="forward",
            allow_exact_matches=False,
            tolerance=pd.Timedelta(horizon),
        )
        .set_index("_row")
        .reindex(np.arange(len(entities)))
    )
    out = entities.copy()
    wait = (joined["next_event"] - joined["event_time"]).dt.total_seconds() / 3600
    out["label"] = joined["next_event"].notna().astype("int64").to_numpy()
    out["hours_to_event"] = wait.to_numpy()
    return out


# --- the same in Spark: what the training_dataset asset builds with, never collected ----------------


def sample_entities_spark(
    registry: DataFrame, start: datetime, end: datetime, every: timedelta, device_share: float = 1.0, stride: int = 1, seed: int = 0
) -> DataFrame:
    """`sample_entities` in Spark: every device of `registry` (a `device_share` of them, chosen by a
    hash of the id and `seed`, so the same share picks the same devices) at `start + every`, then
    every `stride`-th sample time after it, up to and including `end`."""
    step_seconds = int((every * max(1, stride)).total_seconds())
    devices = registry.select("device_id").distinct()
    if device_share < 1.0:
        devices = devices.where((F.abs(F.xxhash64("device_id", F.lit(seed))) % 1_000_000) < F.lit(int(device_share * 1_000_000)))
    first = instant(start + every)
    last = instant(end)
    if start + every > end:
        return devices.select("device_id", F.lit(None).cast("timestamp").alias("event_time")).limit(0)
    times = F.sequence(first, last, F.expr(f"INTERVAL {step_seconds} SECONDS"))
    return devices.select("device_id", F.explode(times).alias("event_time"))


def label_entities_spark(entities: DataFrame, events: DataFrame, horizon: timedelta, event_types: tuple[str, ...]) -> DataFrame:
    """`label_entities` in Spark: `label` = 1 when an event of `event_types` falls in (event_time,
    event_time + horizon], `hours_to_event` to the first such event (NULL past the horizon)."""
    failures = events.where(F.col("event_type").isin(list(event_types))).select(
        F.col("device_id").alias("_device"), F.col("event_time").alias("_next")
    )
    horizon_us = int(horizon / timedelta(microseconds=1))
    ahead = (
        entities.select("device_id", "event_time")
        .join(
            F.broadcast(failures),
            (F.col("device_id") == F.col("_device"))
            & (F.col("_next") > F.col("event_time"))
            & (F.unix_micros("_next") <= F.unix_micros("event_time") + F.lit(horizon_us)),
        )
        .groupBy("device_id", "event_time")
        .agg(F.min("_next").alias("_next"))
    )
    return (
        entities.join(ahead, ["device_id", "event_time"], "left")
        .withColumn("label", F.col("_next").isNotNull().cast("long"))
        .withColumn("hours_to_event", (F.unix_micros("_next") - F.unix_micros("event_time")) / F.lit(3_600_000_000))
        .drop("_next")
    )


def balance_labels(labelled: DataFrame, negatives_per_positive: float | None, seed: int = 0) -> DataFrame:
    """Every positive row, and a random share of the negatives so that about `negatives_per_positive`
    remain per positive (None or too few negatives: all of them)."""
    if negatives_per_positive is None:
        return labelled
    counts = labelled.groupBy("label").count().collect()
    by_label = {r["label"]: r["count"] for r in counts}
    positives, negatives = by_label.get(1, 0), by_label.get(0, 0)
    if not negatives or not positives:
        return labelled
    share = min(1.0, negatives_per_positive * positives / negatives)
    return labelled.where((F.col("label") == 1) | (F.rand(seed) < F.lit(share)))


QUANTILES = {"p5": 0.05, "p25": 0.25, "p50": 0.5, "p75": 0.75, "p95": 0.95}
PSI_BINS = 10


def feature_statistics(values: pd.Series) -> dict:
    """Mean, std, min, max, p5/p25/p50/p75/p95, null fraction and the PSI bin edges of one feature.

    Bin edges are the inner deciles of the training values (duplicates dropped): PSI compares the
    share of new values falling between consecutive edges (with -inf and +inf at the ends) against
    the training share.
    """
    numeric = pd.to_numeric(values, errors="coerce").astype("float64")
    present = numeric[np.isfinite(numeric)]
    stats: dict = {"count": int(len(numeric)), "null_fraction": float(1 - len(present) / len(numeric)) if len(numeric) else 1.0}
    if len(present) == 0:
        return stats | {
            "mean": None,
            "std": None,
            "min": None,
            "max": None,
            **{k: None for k in QUANTILES},
            "bin_edges": [],
            "bin_shares": [],
        }
    edges = np.unique(np.quantile(present, np.linspace(0, 1, PSI_BINS + 1)[1:-1]))
    counts = np.bincount(np.searchsorted(edges, present, side="right"), minlength=len(edges) + 1)
    return stats | {
        "mean": float(present.mean()),
        "std": float(present.std(ddof=1)) if len(present) > 1 else None,
        "min": float(present.min()),
        "max": float(present.max()),
        **{k: float(np.quantile(present, q)) for k, q in QUANTILES.items()},
        "bin_edges": [float(e) for e in edges],
        "bin_shares": [float(c) / len(present) for c in counts],
    }
