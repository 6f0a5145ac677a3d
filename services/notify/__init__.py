"""Notifications: the audit log and the ingest runs, told to a webhook (JSON or Slack)."""
