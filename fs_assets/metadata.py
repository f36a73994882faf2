"""Tables in the Dagster UI: rows of plain values shown as `MetadataValue.table`, sortable and typed."""

from collections.abc import Mapping, Sequence

import dagster as dg

_TYPES = {bool: "bool", int: "int", float: "float"}


def table_metadata(rows: Sequence[Mapping[str, object]], columns: Sequence[str] | None = None) -> dg.MetadataValue:
    """`rows` (dicts with the same keys) as a UI table; column types are read from the first row."""
    names = list(columns or (rows[0].keys() if rows else []))
    first = rows[0] if rows else {}
    schema = dg.TableSchema(columns=[dg.TableColumn(n, _TYPES.get(type(first.get(n)), "string")) for n in names])
    return dg.MetadataValue.table([dg.TableRecord({n: _plain(r.get(n)) for n in names}) for r in rows], schema=schema)


def _plain(value: object) -> object:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)
