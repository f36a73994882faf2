"""Tables in the Dagster UI: rows of plain values shown as `MetadataValue.table`, sortable and typed."""

from collections.abc import Mapping, Sequence

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
