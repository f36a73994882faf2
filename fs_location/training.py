"""Training: per-model training sets and reference snapshots."""

import dagster as dg

from fs_assets.training.assets import training_assets

defs = dg.Definitions(assets=training_assets)
