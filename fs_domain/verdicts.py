"""What every check result says, in one shape (DESIGN.md's paging contract).

A check's result carries what was observed, the threshold it was held to and the comparison that
passes (`observed <comparison> threshold`), the unit, the asset, partition and run it judged, and one
line of what to do with a pointer into the operator guide. Checks build their results from a
`Verdict` (`fs_checks.results.check_result`); the alert router reads this shape back from the
evaluation's metadata and nothing else, so an alert can never say "None / None".
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields

OPERATOR_GUIDE = "docs/operator_guide.md"

# Passes when `observed <comparison> threshold`.
COMPARISONS: dict[str, Callable[[object, object], bool]] = {
    "<=": operator.le,
    "<": operator.lt,
    ">=": operator.ge,
    ">": operator.gt,
    "==": operator.eq,
}

# The metadata keys of the shape; a check's own details go beside them under other names.
OBSERVED = "observed"
THRESHOLD = "threshold"
COMPARISON = "comparison"
UNIT = "unit"
WHAT_TO_DO = "what_to_do"
ASSET = "asset"
PARTITION = "partition"
RUN_ID = "run_id"


def guide_section(title: str) -> str:
    """A link into the operator guide by a section's title (GitHub's anchor for a heading)."""
    anchor = re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")
    return f"{OPERATOR_GUIDE}#{anchor}"


@dataclass(frozen=True)
class Verdict:
    """One check's judgement: `observed <comparison> threshold` in `unit`, and what on-call does."""

    observed: float | int | str
    threshold: float | int | str
    comparison: str
    unit: str
    what_to_do: str
    asset: str | None = None
    partition: str | None = None
    run_id: str | None = None
    # True when what the check judges is a state that moves on (a site event in the newest windows,
    # drift in the newest complete day), not a fault in its partition's rows that stays until fixed:
    # a pass on a later day then answers a failure on an earlier one, whose own evaluation may never
    # come again once its day is over. Set only when the pass rests on windows or days it judged.
    judges_newest: bool | None = None

    def __post_init__(self) -> None:
        if self.comparison not in COMPARISONS:
            raise ValueError(f"comparison must be one of {sorted(COMPARISONS)}, got {self.comparison!r}")
        if self.observed is None or self.threshold is None:
            raise ValueError("a verdict needs an observed value and a threshold")
        if not self.what_to_do or OPERATOR_GUIDE not in self.what_to_do:
            raise ValueError(f"what_to_do must point at a section of {OPERATOR_GUIDE}: {self.what_to_do!r}")

    @property
    def holds(self) -> bool:
        """Whether the observed value meets the threshold (False for a NaN)."""
        if isinstance(self.observed, float) and math.isnan(self.observed):
            return False
        return bool(COMPARISONS[self.comparison](self.observed, self.threshold))

    def sentence(self) -> str:
        """`observed 52.0 minutes, expected <= 45 minutes`."""
        unit = f" {self.unit}" if self.unit else ""
        return f"observed {_show(self.observed)}{unit}, expected {self.comparison} {_show(self.threshold)}{unit}"

    def metadata(self) -> dict[str, object]:
        """The shape as plain metadata values (None fields are left out)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, object]) -> Verdict | None:
        """The verdict a result recorded, or None when it carries no complete shape."""
        values = {f.name: _plain(metadata.get(f.name)) for f in fields(cls)}
        if any(values[k] is None for k in (OBSERVED, THRESHOLD, COMPARISON, UNIT, WHAT_TO_DO)):
            return None
        try:
            return cls(**values)
        except ValueError:
            return None


def _plain(value: object) -> object:
    """A Dagster metadata value's payload (`MetadataValue.value`), or the value itself."""
    return getattr(value, "value", value)


def _show(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1 else f"{value:,.1f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)
