"""Prefect flows: orchestration only. One flow per stage, and the nightly flow composing them."""
