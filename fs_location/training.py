"""Training: per-model training sets, reference snapshots and their promotion to baseline."""

import dagster as dg

from fs_assets.training.assets import training_assets

defs = dg.Definitions(assets=training_assets)
