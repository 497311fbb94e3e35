"""Offline side: training sets from the Parquet log, backfill, consistency checks."""
