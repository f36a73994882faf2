"""The offline store: point-in-time-correct feature lookups for training sets.

For each entity row `(device_id, event_time)` the result holds the latest window of the requested
size with `event_time - tolerance <= window_end <= event_time`, else NULL features, and that
window's end as `feature_window_end`. Every entity row comes back exactly once, in input order.
Features only look backward (inputs in `[window_start, window_end)`), so a window ending at or
before the event holds nothing from after it.

`as_of` (processing time) reads the Delta table as it was at that instant (time travel to the last
version committed by then): a day recomputed later, with late data or a fix, never leaks into a
training set built "as of" an earlier time.

Two engines, one semantics (the tests hold both to a brute-force reference):

- pandas in, pandas out: the needed files (partitions of the window size between the earliest
  event minus the tolerance and the latest event) are listed from the Delta log by `deltalake`
  (no JVM) and read with pyarrow; then one sorted search (numpy `searchsorted`) over
  (device, window_end) keys finds each row's latest window: O((n + m) log m), no sort of the entity
  rows, no Python per row. No Spark start-up (seconds) for a notebook-sized request, and the
  benchmark (bench/offline_bench.py) puts it level with DuckDB's ASOF join. `merge_asof(by=...)`
  states the same semantics but spends most of its time factorizing string keys and sorting.
- Spark in, Spark out: the same partitions read through Spark, a range join on
  `(device_id, window_end BETWEEN event_time - tolerance AND event_time)` and the latest window per
  entity row; for entity sets that are themselves distributed.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from fs_domain.features import DEFAULT_FEATURE_SET_VERSION, FEATURES_BY_NAME, WINDOW_MINUTES, features_for
from fs_domain.tables import features_table
from fs_resources import settings

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

ENTITY_COLUMNS = ("device_id", "event_time")
WINDOW_END_COLUMN = "feature_window_end"


# The pandas path's largest request: its entity rows and their windows are held in memory at once
# (about 1 GB at this size with a dozen features); past it the Spark path streams.
MAX_PANDAS_ENTITY_ROWS = 2_000_000


class HistoricalFeaturesError(ValueError):
    """The request cannot be answered as asked; the message says what to change."""


@dataclass(frozen=True)
class _Request:
    features: tuple[str, ...]
    minutes: int
    tolerance: timedelta
    as_of: datetime | None


def _utc(value: datetime, name: str) -> datetime:
    if value.tzinfo is None:
        raise HistoricalFeaturesError(f"{name} is a naive datetime: give it a time zone, e.g. {name}.replace(tzinfo=timezone.utc)")
    return value.astimezone(UTC)


def _partition_dates(first_event: datetime, last_event: datetime, minutes: int, tolerance: timedelta) -> tuple[date, date]:
    """The `window_date` range holding every window that can match: window_end in
    [first - tolerance, last], window_date = date(window_end - window size)."""
    size = timedelta(minutes=minutes)
    return (first_event - tolerance - size).date(), (last_event - size).date()


def _latest_window(ids: np.ndarray, event_us: np.ndarray, known: np.ndarray, windows: pa.Table, tolerance_us: int) -> np.ndarray:
    """Per entity row, the index in `windows` of its device's latest window with
    event - tolerance <= window_end <= event, or -1.

    Both sides become one int64 key, device code x stride + time, with the stride wider than the
    time span plus the tolerance: a sorted search on that key stays inside a device, and the
    tolerance test rules out the rest. The same answer as `merge_asof(by=device_id,
    direction="backward", tolerance=...)`, without sorting the entity rows.
    """
    result = np.full(len(ids), -1, dtype=np.int64)
    if windows.num_rows == 0 or not known.any():
        return result
    codes, devices = pd.factorize(windows.column("device_id").to_numpy(zero_copy_only=False))
    entity_codes = pd.Index(devices).get_indexer(ids)
    usable = known & (entity_codes >= 0)
    if not usable.any():
        return result
    ends = windows.column("window_end").cast(pa.int64()).to_numpy()
    origin = min(int(ends.min()), int(event_us[usable].min()))
    stride = max(int(ends.max()), int(event_us[usable].max())) - origin + tolerance_us + 1
    if stride * (len(devices) + 1) >= 2**62:
        raise HistoricalFeaturesError("the entity time range is too wide for one request: split it into shorter ranges")
    right = codes.astype(np.int64) * stride + (ends - origin)
    order = np.argsort(right, kind="stable")
    right = right[order]
    left = entity_codes[usable].astype(np.int64) * stride + (event_us[usable] - origin)
    position = np.searchsorted(right, left, side="right") - 1
    found = position >= 0
    found[found] = left[found] - right[position[found]] <= tolerance_us
    result[np.flatnonzero(usable)[found]] = order[position[found]]
    return result


class OfflineStore:
    """The `device_features` Delta table of one feature set version, read point in time."""

    def __init__(
        self, tables_root: str | None = None, feature_set_version: str | None = None, archive: bool = False, archive_root: str | None = None
    ):
        """`archive=True` also reads the days retention moved to the archive (`archive_root`, else
        FS_ARCHIVE_ROOT, else FS_DATA_ROOT/archive): training over more than the hot table keeps."""
        self.tables_root = (tables_root or settings.tables_root()).rstrip("/")
        self.version = feature_set_version or os.environ.get("FS_FEATURE_SET_VERSION") or DEFAULT_FEATURE_SET_VERSION
        self._known = {f.name for f in features_for(self.version)}
        self.archive_root = (archive_root or settings.archive_root()).rstrip("/") if archive else None

    @property
    def path(self) -> str:
        return f"{self.tables_root}/{features_table(self.version)}"

    @property
    def archive_path(self) -> str | None:
        return f"{self.archive_root}/{features_table(self.version)}" if self.archive_root else None

    def _paths(self) -> list[tuple[str, bool]]:
        """The tables a read covers, each with whether it may be absent (the archive, before any day expired)."""
        return [(self.path, False)] + ([(self.archive_path, True)] if self.archive_path else [])

    # --- validation ---------------------------------------------------------------------------

    def _request(self, features: Sequence[str], window_minutes: int, tolerance: timedelta, as_of: datetime | None) -> _Request:
        if isinstance(features, str):
            raise HistoricalFeaturesError(f"features must be a list of feature names, e.g. [{features!r}]")
        features = tuple(features)
        if not features:
            raise HistoricalFeaturesError("no features requested")
        if len(set(features)) != len(features):
            raise HistoricalFeaturesError(f"features listed twice: {sorted({f for f in features if features.count(f) > 1})}")
        unknown = [f for f in features if f not in FEATURES_BY_NAME]
        if unknown:
            raise HistoricalFeaturesError(
                f"unknown features {unknown}; see docs/features.md for the {len(self._known)} features of {self.version}"
            )
        later = [f for f in features if f not in self._known]
        if later:
            raise HistoricalFeaturesError(
                f"features {later} are not in feature set {self.version} (added in {FEATURES_BY_NAME[later[0]].added_in}); open the store with that version"
            )
        if window_minutes not in WINDOW_MINUTES:
            raise HistoricalFeaturesError(f"window_minutes must be one of {list(WINDOW_MINUTES)}, got {window_minutes!r}")
        other_windows = [f for f in features if window_minutes not in FEATURES_BY_NAME[f].windows]
        if other_windows:
            raise HistoricalFeaturesError(f"features {other_windows} are not computed for {window_minutes}-minute windows")
        if not isinstance(tolerance, timedelta) or tolerance < timedelta(0):
            raise HistoricalFeaturesError(f"tolerance must be a non-negative timedelta, got {tolerance!r}")
        return _Request(features, window_minutes, tolerance, None if as_of is None else _utc(as_of, "as_of"))

    @staticmethod
    def _entity_frame(entity_df: pd.DataFrame, request: _Request) -> pd.Series:
        """The entity rows' event times in UTC (validated)."""
        missing = [c for c in ENTITY_COLUMNS if c not in entity_df.columns]
        if missing:
            raise HistoricalFeaturesError(
                f"entity_df lacks columns {missing}: it needs device_id (str) and event_time (datetime64 with a time zone)"
            )
        clashes = [c for c in (*request.features, WINDOW_END_COLUMN) if c in entity_df.columns]
        if clashes:
            raise HistoricalFeaturesError(f"entity_df already has columns {clashes}: drop or rename them first")
        times = entity_df["event_time"]
        if not pd.api.types.is_datetime64_any_dtype(times):
            raise HistoricalFeaturesError(
                f"event_time has dtype {times.dtype}, not a timestamp: convert it, e.g. entity_df['event_time'] = pd.to_datetime(entity_df['event_time'], utc=True)"
            )
        if getattr(times.dt, "tz", None) is None:
            raise HistoricalFeaturesError(
                "event_time is naive (no time zone): say which it is, e.g. entity_df['event_time'] = entity_df['event_time'].dt.tz_localize('UTC')"
            )
        ids = entity_df["device_id"]
        if not (pd.api.types.is_string_dtype(ids) or pd.api.types.is_object_dtype(ids)) or not ids.dropna().map(type).eq(str).all():
            raise HistoricalFeaturesError(f"device_id must hold strings, got dtype {ids.dtype}")
        return times.dt.tz_convert("UTC").astype("datetime64[us, UTC]")

    # --- pandas -------------------------------------------------------------------------------

    def _snapshot(self, as_of: datetime | None, path: str | None = None, missing_ok: bool = False, for_spark: bool = False):
        """The table at `path` (the features table) as of `as_of` (or now), or None when nothing had
        been written by then (or, `missing_ok`, when there is no table). Read by delta-rs, it must need
        no reader feature (`for_spark`: Spark reads it, any will do)."""
        from deltalake import DeltaTable
        from deltalake.exceptions import TableNotFoundError

        path = path or self.path
        try:
            table = DeltaTable(path)
        except TableNotFoundError as exc:
            if missing_ok:
                return None
            raise HistoricalFeaturesError(
                f"no feature table at {path}: materialize the device_features assets (or check FS_DATA_ROOT and the feature set version)"
            ) from exc
        if as_of is not None:
            earliest = min(table.history(), key=lambda h: h["version"])
            earliest_at = datetime.fromtimestamp(earliest["timestamp"] / 1000, UTC)
            if as_of < earliest_at:
                if earliest["version"] == 0:
                    return None  # the table did not exist yet: nothing was known then
                # The log before `earliest` was cleaned up: the table as it was then cannot be read,
                # and answering "no features" would be a silent lie.
                raise HistoricalFeaturesError(
                    f"as_of {as_of.isoformat()} is before the retained history of {path}: the earliest time it can be read "
                    f"as of is {earliest_at.isoformat()} (version {earliest['version']}); older log entries were removed "
                    "(delta.logRetentionDuration, see the table maintenance job); a promoted model's training set is rebuilt "
                    "from its pin instead (training_dataset with rebuild_snapshot)"
                )
            table.load_as_version(as_of)
        reader = table.protocol()
        if reader.min_reader_version > 1 and not for_spark:
            # Deletion vectors or column mapping would make a plain Parquet read wrong; use Spark.
            raise HistoricalFeaturesError(
                f"{path} uses Delta reader features {reader.reader_features}: pass a Spark DataFrame to read it through Spark"
            )
        return table

    def table_version(self, as_of: datetime | None = None) -> int | None:
        """The Delta version of the features table a read as of `as_of` (or now) sees; None when
        nothing had been written by then. Training sets record it beside their rows."""
        table = self._snapshot(None if as_of is None else _utc(as_of, "as_of"))
        return None if table is None else table.version()

    def _read_windows(self, request: _Request, first: datetime | None, last: datetime | None, device_ids: np.ndarray) -> pa.Table:
        columns = ["device_id", "window_end", *request.features]
        schema = pa.schema(
            [("device_id", pa.string()), ("window_end", pa.timestamp("us", tz="UTC"))]
            + [(f, pa.int64() if FEATURES_BY_NAME[f].dtype == "long" else pa.float64()) for f in request.features]
        )
        if first is None:
            return schema.empty_table()
        low, high = _partition_dates(first, last, request.minutes, request.tolerance)
        files = []
        for path, missing_ok in self._paths():
            table = self._snapshot(request.as_of, path, missing_ok)
            if table is None:
                continue
            files += table.file_uris(
                file_pruning_predicate=[
                    ("window_duration_minutes", "=", str(request.minutes)),
                    ("window_date", ">=", low.isoformat()),
                    ("window_date", "<=", high.isoformat()),
                ]
            )
        if not files:
            return schema.empty_table()
        keep = (pc.field("window_end") >= pa.scalar(first - request.tolerance, pa.timestamp("us", tz="UTC"))) & (
            pc.field("window_end") <= pa.scalar(last, pa.timestamp("us", tz="UTC"))
        )
        if len(device_ids) <= 10_000:
            keep = keep & pc.field("device_id").isin(pa.array(device_ids, pa.string()))
        read = pq.read_table(files, columns=columns, filters=keep, partitioning=None)
        return read.cast(schema)

    def _historical_pandas(self, entity_df: pd.DataFrame, request: _Request) -> pd.DataFrame:
        if len(entity_df) > MAX_PANDAS_ENTITY_ROWS:
            raise HistoricalFeaturesError(
                f"{len(entity_df):,} entity rows: the pandas path holds every row and window in this process and takes at most "
                f"{MAX_PANDAS_ENTITY_ROWS:,}; pass a Spark DataFrame (spark.createDataFrame(entity_df), or the entities built in "
                "Spark) and the join runs in Spark, streamed to wherever you write it"
            )
        times = self._entity_frame(entity_df, request)
        event_us = times.to_numpy(dtype="datetime64[us]", na_value=np.datetime64("NaT")).astype("int64")
        ids = entity_df["device_id"].to_numpy(object)
        known = ~times.isna().to_numpy() & ~pd.isna(ids)
        if known.any():
            first = pd.Timestamp(event_us[known].min(), unit="us", tz="UTC").to_pydatetime()
            last = pd.Timestamp(event_us[known].max(), unit="us", tz="UTC").to_pydatetime()
            windows = self._read_windows(request, first, last, pd.unique(ids[known]))
        else:
            windows = self._read_windows(request, None, None, np.array([], object))
        match = _latest_window(ids, event_us, known, windows, int(request.tolerance / timedelta(microseconds=1)))
        picked = windows.take(pa.array(np.where(match >= 0, match, 0), mask=match < 0))
        out = entity_df.copy()
        for name in request.features:
            column = picked.column(name)
            out[name] = (
                column.to_pandas(types_mapper={pa.int64(): pd.Int64Dtype()}.get).array
                if FEATURES_BY_NAME[name].dtype == "long"
                else column.to_numpy(zero_copy_only=False)
            )
        out[WINDOW_END_COLUMN] = picked.column("window_end").to_pandas().array
        return out

    # --- Spark --------------------------------------------------------------------------------

    def _historical_spark(self, entity_df: DataFrame, request: _Request, ordered: bool = True) -> DataFrame:
        from pyspark.sql import functions as F
        from pyspark.sql import types as T

        fields = {f.name: f.dataType for f in entity_df.schema.fields}
        missing = [c for c in ENTITY_COLUMNS if c not in fields]
        if missing:
            raise HistoricalFeaturesError(f"entity_df lacks columns {missing}: it needs device_id (string) and event_time (timestamp)")
        if isinstance(fields["event_time"], T.TimestampNTZType):
            raise HistoricalFeaturesError(
                "event_time is TIMESTAMP_NTZ (no time zone): cast it, e.g. F.to_utc_timestamp('event_time', 'UTC').cast('timestamp')"
            )
        if not isinstance(fields["event_time"], T.TimestampType):
            raise HistoricalFeaturesError(
                f"event_time is {fields['event_time'].simpleString()}, not a timestamp: cast it, e.g. F.col('event_time').cast('timestamp')"
            )
        if not isinstance(fields["device_id"], T.StringType):
            raise HistoricalFeaturesError(f"device_id is {fields['device_id'].simpleString()}, not a string")
        clashes = [c for c in (*request.features, WINDOW_END_COLUMN) if c in fields]
        if clashes:
            raise HistoricalFeaturesError(f"entity_df already has columns {clashes}: drop or rename them first")
        spark: SparkSession = entity_df.sparkSession
        entities = entity_df.withColumn("_row", F.monotonically_increasing_id()).cache()
        bounds = entities.agg(F.min("event_time").alias("first"), F.max("event_time").alias("last")).first()
        windows = self._spark_windows(spark, request, bounds["first"], bounds["last"], self._window_schema(request))
        return self._join(entities, windows, request, entity_df.columns, ordered)

    @staticmethod
    def _window_schema(request: _Request):
        from pyspark.sql import types as T

        return T.StructType(
            [T.StructField("device_id", T.StringType()), T.StructField("window_end", T.TimestampType())]
            + [T.StructField(f, T.LongType() if FEATURES_BY_NAME[f].dtype == "long" else T.DoubleType()) for f in request.features]
        )

    @staticmethod
    def _join(entities: DataFrame, windows: DataFrame, request: _Request, columns: Sequence[str], ordered: bool) -> DataFrame:
        """Each entity row (`_row` numbered) with its latest window within the tolerance, in Spark."""
        from pyspark.sql import functions as F

        tolerance_us = max(1, int(request.tolerance / timedelta(microseconds=1)))
        # Time in buckets of the tolerance: a window within [event_time - tolerance, event_time] ends in
        # the entity's bucket or the one before, so each window is offered to both and the join is on
        # (device, bucket). Joined on the device alone, every entity row of a device met every window
        # of it: a year of daily rows is 365 x 365 pairs a device.
        bucket = F.floor(F.unix_micros("window_end") / F.lit(tolerance_us)).cast("long")
        offered = windows.withColumnRenamed("device_id", "_device").withColumn("_bucket", F.explode(F.array(bucket, bucket + F.lit(1))))
        matches = (
            entities.select("_row", "device_id", "event_time")
            .withColumn("_entity_bucket", F.floor(F.unix_micros("event_time") / F.lit(tolerance_us)).cast("long"))
            .join(
                offered,
                (F.col("device_id") == F.col("_device"))
                & (F.col("_entity_bucket") == F.col("_bucket"))
                & (F.col("window_end") <= F.col("event_time"))
                & (F.col("window_end") >= F.timestamp_micros(F.unix_micros("event_time") - F.lit(tolerance_us))),
            )
            .groupBy("_row")
            .agg(F.max_by(F.struct("window_end", *request.features), "window_end").alias("_w"))
        )
        result = entities.join(matches, "_row", "left")
        if ordered:
            # Input order, as for pandas: the row ids of `monotonically_increasing_id` follow it.
            result = result.orderBy("_row")
        return result.select(
            *[F.col(c) for c in columns],
            *[F.col(f"_w.{f}").alias(f) for f in request.features],
            F.col("_w.window_end").alias(WINDOW_END_COLUMN),
        )

    def _spark_windows(self, spark: SparkSession, request: _Request, first: datetime | None, last: datetime | None, schema) -> DataFrame:
        from pyspark.sql import functions as F
        from pyspark.sql.utils import AnalysisException

        empty = spark.createDataFrame([], schema)
        if first is None:
            return empty
        first, last = (
            first.replace(tzinfo=UTC) if first.tzinfo is None else first,
            last.replace(tzinfo=UTC) if last.tzinfo is None else last,
        )
        low, high = _partition_dates(first, last, request.minutes, request.tolerance)
        out = empty
        for path, missing_ok in self._paths():
            snapshot = self._snapshot(request.as_of, path, missing_ok, for_spark=True)
            if snapshot is None:
                continue  # nothing written there by then (or no archive yet)
            reader = spark.read.format("delta")
            if request.as_of is not None:
                # The version the pandas path reads too (Spark refuses a time after the last commit).
                reader = reader.option("versionAsOf", snapshot.version())
            try:
                table = reader.load(path)
            except AnalysisException as exc:
                raise HistoricalFeaturesError(f"cannot read {path}: {exc}") from exc
            out = out.unionByName(
                table.where(
                    (F.col("window_duration_minutes") == request.minutes) & F.col("window_date").between(F.lit(low), F.lit(high))
                ).select(*[F.col(f.name).cast(f.dataType) for f in schema.fields])
            )
        return out

    # --- public -------------------------------------------------------------------------------

    def windows(
        self,
        spark: SparkSession,
        features: Sequence[str],
        window_minutes: int,
        tolerance: timedelta,
        as_of: datetime | None,
        first: datetime | None,
        last: datetime | None,
    ) -> DataFrame:
        """The windows a point-in-time join of entity rows from `first` to `last` chooses from (device_id,
        window_end and `features`), as of `as_of`, lazily: what a training set's pin copies."""
        request = self._request(features, window_minutes, tolerance, as_of)
        return self._spark_windows(spark, request, first, last, self._window_schema(request))

    def join_windows(
        self, entity_df: DataFrame, windows: DataFrame, features: Sequence[str], window_minutes: int, tolerance: timedelta
    ) -> DataFrame:
        """`get_historical_features` of a Spark entity frame against windows given rather than read from
        the table (a pin's copy): the same join, so the same rows."""
        from pyspark.sql import functions as F

        request = self._request(features, window_minutes, tolerance, None)
        entities = entity_df.withColumn("_row", F.monotonically_increasing_id())
        picked = windows.select(*[F.col(f.name).cast(f.dataType) for f in self._window_schema(request).fields])
        return self._join(entities, picked, request, entity_df.columns, ordered=False)

    def get_historical_features(
        self,
        entity_df,
        features: Sequence[str],
        window_minutes: int,
        tolerance: timedelta = timedelta(hours=1),
        as_of: datetime | None = None,
        ordered: bool = True,
    ):
        """The entity rows with the requested features of their latest window of `window_minutes`
        ending within `[event_time - tolerance, event_time]`, and `feature_window_end`.

        A pandas frame comes back as a pandas frame (at most `MAX_PANDAS_ENTITY_ROWS` rows); a Spark
        frame as a lazy Spark frame, joined in Spark and never collected (`ordered=False` skips
        sorting it back into the input's order, for a writer that does not need it)."""
        request = self._request(features, window_minutes, tolerance, as_of)
        if isinstance(entity_df, pd.DataFrame):
            return self._historical_pandas(entity_df, request)
        try:
            from pyspark.sql import DataFrame
        except ImportError:  # pragma: no cover - pyspark is a dependency
            DataFrame = ()
        if isinstance(entity_df, DataFrame):
            return self._historical_spark(entity_df, request, ordered)
        raise HistoricalFeaturesError(f"entity_df must be a pandas or Spark DataFrame, got {type(entity_df).__name__}")
