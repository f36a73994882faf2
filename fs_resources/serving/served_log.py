"""The served-value log: a sample of what `fs-serve` answered, in a Delta table, for training-serving skew.

A share of requests (`FS_SERVE_LOG_SHARE`, default 1 %) is logged: one row per served value (entry,
device, field, the window it came from), so `check_served_value_skew` compares exactly what was
served with the offline features of the same window. Requests only append to a bounded buffer;
a background thread writes it every few seconds with delta-rs (no JVM in the server). When the
buffer is full the sample is dropped and counted, never the request slowed; a failed write is
retried at the next flush and counted.
"""

from __future__ import annotations

import random
import threading
from collections import deque
from datetime import UTC, datetime

import pyarrow as pa

from fs_domain.tables import SERVED_VALUES_TABLE

LOG_SHARE_SETTING = "FS_SERVE_LOG_SHARE"
DEFAULT_LOG_SHARE = 0.01
FLUSH_SECONDS = 5.0
MAX_BUFFERED_ROWS = 200_000

SCHEMA = pa.schema(
    [
        ("served_at", pa.timestamp("us", tz="UTC")),
        ("served_date", pa.date32()),
        ("entry", pa.string()),  # "Device", or the model's name
        ("feature_set_version", pa.string()),
        ("device_id", pa.string()),
        ("window_start", pa.timestamp("us", tz="UTC")),  # a model vector's window; NULL for the Device object
        ("window_end", pa.timestamp("us", tz="UTC")),
        ("field", pa.string()),
        ("value", pa.float64()),  # numbers
        ("text", pa.string()),  # everything else, as served
    ]
)


def _timestamp(text: object) -> datetime | None:
    return datetime.fromisoformat(text) if isinstance(text, str) else None


class ServedValueLog:
    """`maybe_record(...)` from request handlers; `start()` the writer thread, `close()` flushes and stops it."""

    def __init__(
        self, path: str, share: float = DEFAULT_LOG_SHARE, flush_seconds: float = FLUSH_SECONDS, max_rows: int = MAX_BUFFERED_ROWS
    ):
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"{LOG_SHARE_SETTING} must be between 0 and 1, not {share}")
        self.path, self.share, self.flush_seconds, self.max_rows = path, share, flush_seconds, max_rows
        self._rows: deque[tuple] = deque()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.written = self.dropped = self.failed_writes = 0

    def sampled(self) -> bool:
        return self.share > 0 and (self.share >= 1 or random.random() < self.share)

    def record(
        self,
        entry: str,
        version: str,
        device_id: str,
        fields: list[str],
        values: list[object],
        window: tuple[object, object] = (None, None),
    ) -> None:
        now = datetime.now(UTC)
        start, end = _timestamp(window[0]), _timestamp(window[1])
        rows = [
            (
                now,
                now.date(),
                entry,
                version,
                device_id,
                start,
                end,
                f,
                float(v) if isinstance(v, int | float) else None,
                None if isinstance(v, int | float) or v is None else str(v),
            )
            for f, v in zip(fields, values)
        ]
        with self._lock:
            if len(self._rows) + len(rows) > self.max_rows:
                self.dropped += len(rows)
                return
            self._rows.extend(rows)

    def flush(self) -> int:
        from deltalake import write_deltalake

        with self._lock:
            rows, self._rows = list(self._rows), deque()
        if not rows:
            return 0
        table = pa.Table.from_pylist([dict(zip(SCHEMA.names, r)) for r in rows], schema=SCHEMA)
        try:
            write_deltalake(self.path, table, mode="append", partition_by=["served_date"])
        except Exception:  # noqa: BLE001 - the rows go back to the buffer, tried again at the next flush
            self.failed_writes += 1
            with self._lock:
                keep = max(0, self.max_rows - len(self._rows))
                self.dropped += max(0, len(rows) - keep)
                self._rows.extendleft(reversed(rows[:keep]))
            return 0
        self.written += len(rows)
        return len(rows)

    def _run(self) -> None:
        while not self._stop.wait(self.flush_seconds):
            self.flush()
        self.flush()

    def start(self) -> ServedValueLog:
        if self._thread is None and self.share > 0:
            self._thread = threading.Thread(target=self._run, name="served-value-log", daemon=True)
            self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None


def served_values_path(tables_root: str) -> str:
    return f"{tables_root.rstrip('/')}/{SERVED_VALUES_TABLE}"
