"""The code location, assembled per domain: each module's `defs` holds one domain's assets side by
side with their checks, jobs, schedules and sensors; `definitions.py` merges them with the resources.

    ingest      landing zone, registry, maintenance events, clean readings
    features    one window size at a time: its asset, its checks (its freshness policy is on the asset)
    training    training sets and reference snapshots, per model
    monitoring  anomaly scores and drift reports
    ontology    the `Device` object and its Redis projection
    operations  freshness checks, alert routing and table maintenance, across domains
"""
