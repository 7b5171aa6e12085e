"""Adapters of the simulated world (the embedded default) and of real time, for the ports in
:mod:`stagegate.ports`. Each is registered in its port's entry-point group in pyproject.toml and built by
:mod:`stagegate.connections` from a connections file, exactly as a third-party adapter would be.

- ``stagegate.traffic``: ``file`` (:class:`stagegate.traffic.simulated.FileTrafficController`)
- ``stagegate.metrics``: ``events`` (:class:`stagegate.adapters.metrics.EventStoreMetricSource`)
- ``stagegate.offline_data``: ``workspace`` (:class:`stagegate.adapters.offline.WorkspaceOfflineData`) and
  ``parquet`` (:class:`stagegate.adapters.offline.ParquetOfflineData`, your own logs, local or on S3)
- ``stagegate.clock``: ``simulated`` and ``wall`` (:mod:`stagegate.adapters.clock`)
"""
