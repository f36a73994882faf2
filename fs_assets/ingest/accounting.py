"""The accounting identity of clean readings: raw rows = clean + quarantined + duplicates dropped.

It is a blocking check of `clean_sensor_readings` that the clean step evaluates itself: only the
step knows how many raw rows it read. So the check's spec and evaluation live beside the asset
(the other ingest checks, which re-read the written table, are in `fs_checks.ingest_checks`).
"""

import dagster as dg

from fs_assets.ingest.cleaning import PartitionAccounting
from fs_assets.metadata import table_metadata

CHECK_ACCOUNTING = "check_accounting_identity"

accounting_check_spec = dg.AssetCheckSpec(
    name=CHECK_ACCOUNTING,
    asset=dg.AssetKey("clean_sensor_readings"),
    blocking=True,
    description="raw rows = clean rows + quarantined rows + duplicates dropped, for every partition written.",
)


def evaluate_accounting(books: dict[str, PartitionAccounting], written: dict[str, int]) -> dg.AssetCheckResult:
    """Balance each partition's books, with the clean rows counted back from the written table."""
    rows = []
    unbalanced = []
    for partition, b in sorted(books.items()):
        on_disk = written.get(partition, 0)
        ok = b.balanced and on_disk == b.clean_rows
        if not ok:
            unbalanced.append(partition)
        rows.append(
            {
                "partition": partition,
                "raw": b.raw_rows,
                "clean_in_table": on_disk,
                "quarantined": b.quarantined_rows,
                "duplicates_dropped": b.duplicates_dropped,
                "books": "ok" if ok else "UNBALANCED",
            }
        )
    return dg.AssetCheckResult(
        check_name=CHECK_ACCOUNTING,
        passed=not unbalanced,
        severity=dg.AssetCheckSeverity.ERROR,
        description=None if not unbalanced else f"books do not balance for {', '.join(unbalanced)}",
        metadata={
            "partitions_checked": len(books),
            "unbalanced_partitions": dg.MetadataValue.text(", ".join(unbalanced) or "none"),
            "books": table_metadata(rows),
        },
    )
