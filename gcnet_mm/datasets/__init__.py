"""Datasets helpers: synthetic datasets in real on-disk formats."""
