"""`check_result`: every asset check builds its result here, in the one shape of `fs_domain.verdicts`.

The result's metadata always holds `observed`, `threshold`, `comparison`, `unit`, `what_to_do`,
`asset`, `partition` and `run_id`; a check's own details (tables, samples, scopes) go beside them.
The alert router reads only that shape.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

import dagster as dg

from fs_domain.verdicts import Verdict


def judged_partition(context: dg.AssetCheckExecutionContext | None) -> str | None:
    """The partition (or `first..last` range) the check's run judged, None when unpartitioned."""
    if context is None:
        return None
    try:
        keys = list(context.partition_keys)
    except Exception:  # an unpartitioned check has no partition keys
        return None
    if not keys:
        return None
    return keys[0] if len(keys) == 1 else f"{keys[0]}..{keys[-1]}"


def check_result(
    verdict: Verdict,
    *,
    context: dg.AssetCheckExecutionContext | None = None,
    passed: bool | None = None,
    severity: dg.AssetCheckSeverity = dg.AssetCheckSeverity.ERROR,
    description: str | None = None,
    metadata: Mapping[str, object] | None = None,
    asset_key: dg.AssetKey | None = None,
    check_name: str | None = None,
) -> dg.AssetCheckResult:
    """An `AssetCheckResult` carrying `verdict`'s shape, filled in with the run and partition judged.

    `passed` defaults to whether the verdict holds; pass it explicitly when the judgement is more than
    one comparison (the description then says why). The description defaults to the verdict's sentence.
    """
    asset = verdict.asset or (asset_key.to_user_string() if asset_key is not None else None)
    if asset is None and context is not None:
        asset = context.check_specs[0].asset_key.to_user_string() if len(context.check_specs) == 1 else None
    run_id = verdict.run_id or (context.run.run_id if context is not None else None)
    partition = verdict.partition or judged_partition(context)
    shaped = replace(verdict, asset=asset, partition=partition, run_id=run_id)
    return dg.AssetCheckResult(
        asset_key=asset_key,
        check_name=check_name,
        passed=shaped.holds if passed is None else passed,
        severity=severity,
        description=description or shaped.sentence(),
        metadata={**(metadata or {}), **shaped.metadata()},
    )
