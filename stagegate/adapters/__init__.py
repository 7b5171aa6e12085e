"""The core's adapters for the ports in :mod:`stagegate.ports`. Each is registered in its port's
entry-point group in pyproject.toml and built by :mod:`stagegate.connections` from a connections file,
exactly as a third-party adapter would be.

- ``stagegate.metrics``: ``events`` (:class:`stagegate.adapters.metrics.EventStoreMetricSource`)
- ``stagegate.offline_data``: ``parquet`` (:class:`stagegate.adapters.offline.ParquetOfflineData`, your
  own logs, local or on S3)
- ``stagegate.clock``: ``wall`` (:class:`stagegate.adapters.clock.WallClock`)

The simulated world's adapters (the embedded default: ``file`` traffic, ``workspace`` offline data,
``simulated`` clock) are the simulator package's (simulator.traffic, simulator.adapters), registered the
same way; the core never imports them.
"""
