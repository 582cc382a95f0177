"""Ingestion, the DuckDB store, label sources, imports and comparison."""
