"""The code location's asset checks, found from `definitions.defs`, run on a test's resources: alone
(judging what the tables and the instance hold, as a check launched from the UI does) and read back
in the one result shape every check writes."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

import dagster as dg

from fs_domain.verdicts import OPERATOR_GUIDE, Verdict, guide_section

GUIDE_PATH = Path(__file__).resolve().parent.parent / OPERATOR_GUIDE
CHECKS_ALONE_JOB = "checks_alone"


def guide_anchors() -> set[str]:
    """The links `guide_section` makes to the headings the operator guide has."""
    titles = [line.lstrip("#").strip() for line in GUIDE_PATH.read_text().splitlines() if re.match(r"#{1,6} ", line)]
    return {guide_section(title) for title in titles}


def shape_problem(metadata: dict, asset: dg.AssetKey, anchors: set[str], partition: str | None = None) -> str | None:
    """Why an evaluation's metadata is not a complete verdict of `asset` (and of a partition, when the
    evaluation judged `partition`) linking an existing guide section, or None."""
    verdict = Verdict.from_metadata(metadata)
    if verdict is None:
        shown = {
            k: getattr(v, "value", v) for k, v in metadata.items() if k in ("observed", "threshold", "comparison", "unit", "what_to_do")
        }
        return f"no complete verdict (has {shown})"
    links = set(re.findall(rf"{re.escape(OPERATOR_GUIDE)}#[\w-]+", verdict.what_to_do))
    if not links or not links <= anchors:
        return f"what_to_do links no heading of {OPERATOR_GUIDE}: {sorted(links - anchors) or verdict.what_to_do!r}"
    if verdict.asset != asset.to_user_string() or not verdict.run_id or (partition and not verdict.partition):
        return f"judged asset {verdict.asset!r}, partition {verdict.partition!r} and run {verdict.run_id!r}"
    return None


def code_location(resources: dict) -> dg.Definitions:
    """Every asset and check of the code location, on `resources`."""
    import definitions

    return dg.Definitions(
        assets=list(definitions.defs.assets or []), asset_checks=list(definitions.defs.asset_checks or []), resources=resources
    )


def check_definitions(defs: dg.Definitions) -> list[dg.AssetChecksDefinition]:
    """The location's checks that run as ops of their own (not evaluated by the step of their asset)."""
    return [c for c in defs.get_repository_def().asset_graph.assets_defs if c.check_keys and not c.keys]


def checks_of(defs: dg.Definitions, keys: Iterable[dg.AssetCheckKey]) -> list[dg.AssetChecksDefinition]:
    wanted = set(keys)
    return [c for c in check_definitions(defs) if c.check_keys & wanted]


def run_checks_alone(
    defs: dg.Definitions, checks: list[dg.AssetChecksDefinition], instance: dg.DagsterInstance, partition_key: str | None = None
) -> dg.ExecuteInProcessResult:
    """Execute `checks` without materializing their assets (their ops alone, selected from a job of their assets)."""
    # The job holds the checks' assets (and with them their checks); the op selection runs the checks alone.
    selection = dg.AssetSelection.assets(*{k.asset_key for c in checks for k in c.check_keys})
    with_job = dg.Definitions(
        assets=defs.assets,
        asset_checks=defs.asset_checks,
        jobs=[dg.define_asset_job(CHECKS_ALONE_JOB, selection=selection)],
        resources=defs.resources,
    )
    return with_job.resolve_job_def(CHECKS_ALONE_JOB).execute_in_process(
        instance=instance, partition_key=partition_key, op_selection=[c.node_def.name for c in checks], raise_on_error=False
    )


def evaluations(result: dg.ExecuteInProcessResult) -> dict[tuple[str, str], dg.AssetCheckEvaluation]:
    return {(e.asset_key.to_user_string(), e.check_name): e for e in result.get_asset_check_evaluations()}


def verdict_of(evaluation: dg.AssetCheckEvaluation) -> Verdict:
    verdict = Verdict.from_metadata(evaluation.metadata)
    assert verdict is not None, evaluation.metadata
    return verdict
