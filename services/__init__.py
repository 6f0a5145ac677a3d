"""Flywheel's domain: one package per stage of the loop, importable without Prefect."""
