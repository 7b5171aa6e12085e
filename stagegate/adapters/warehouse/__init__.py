"""Warehouse-native metric sources: per-user aggregates computed inside the database.

See docs/adapters/warehouse.md. Modules:

- definitions: the metric definitions of the connections file (pydantic);
- query: the SQLAlchemy Core statements built from them, every value bound;
- dialects: engines with bounded timeouts per database, reflection, DuckDB over Parquet;
- source: the ``sql`` and ``duckdb`` adapters of the MetricSource port.
"""

from stagegate.adapters.warehouse.source import DuckDBMetricSource, SqlMetricSource, WarehouseMetricSource

__all__ = ["DuckDBMetricSource", "SqlMetricSource", "WarehouseMetricSource"]
