"""The device feature store's domain: what the data is, independent of how it is computed.

Plain Python, with no Dagster, Spark or Redis imports: the landing contract (`contract`), the
feature registry and its window sizes (`features`), the `Device` object type (`device`), the model
specs (`models`), the table names (`tables`) and the SLAs (`slas`). Every other package reads
its facts from here; this package imports from none of them.
"""
