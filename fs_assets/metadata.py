"""Metadata shared by the assets: tables in the Dagster UI (rows of plain values shown as
`MetadataValue.table`, sortable and typed), and each asset's data time.

Data time: every asset that data-time freshness judges records the newest value of its clock column
over the partitions it wrote, as `latest_<column>` (an ISO timestamp, or "none"), read from the
table after the write. `fs_checks.data_freshness_checks` reads it back from the materializations,
so a freshness check needs no Spark session.
"""

from collections.abc import Mapping, Sequence
from datetime import datetime

import dagster as dg

_TYPES = {bool: "bool", int: "int", float: "float"}


def table_metadata(rows: Sequence[Mapping[str, object]], columns: Sequence[str] | None = None) -> dg.MetadataValue:
    """`rows` (dicts with the same keys) as a UI table; a column's type is that of its first non-NULL value."""
    names = list(columns or (rows[0].keys() if rows else []))
    schema = dg.TableSchema(columns=[dg.TableColumn(n, _column_type(rows, n)) for n in names])
    return dg.MetadataValue.table([dg.TableRecord({n: _plain(r.get(n)) for n in names}) for r in rows], schema=schema)


def _column_type(rows: Sequence[Mapping[str, object]], name: str) -> str:
    value = next((r.get(name) for r in rows if r.get(name) is not None), None)
    return _TYPES.get(type(value), "string")


def _plain(value: object) -> object:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def latest_key(column: str) -> str:
    """The metadata key under which an asset records the newest value of `column` it holds."""
    return f"latest_{column}"


def latest_value(value: datetime | None) -> str:
    return value.isoformat() if value else "none"
