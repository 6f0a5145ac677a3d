"""The webhook: a notification shaped for its receiver and posted once.

Two shapes. ``json`` posts the notification as Flywheel builds it (services/notify/events.py).
``slack`` posts what a Slack incoming webhook takes: ``text`` (the fallback, shown in
notifications) and Block Kit ``blocks`` (a header, the text, a context line).
"""

from __future__ import annotations

from typing import Any

import httpx

# Slack refuses a header block longer than this (Block Kit: plain_text header, 150 chars).
SLACK_HEADER_MAX = 150
# ...and a section's text longer than this.
SLACK_SECTION_MAX = 3000


class DeliveryFailed(Exception):
    """The receiver did not take the notification; the message says why."""


def shaped(notification: dict[str, Any], form: str) -> dict[str, Any]:
    """The body to post: the notification itself (json) or Slack's text and blocks."""
    if form == "json":
        return notification
    if form == "slack":
        return _slack(notification)
    raise ValueError(f"unknown notification format {form!r}: json or slack")


def _slack(notification: dict[str, Any]) -> dict[str, Any]:
    title, text = notification["title"], _escaped(notification["text"])
    context = f"{notification['event']} · {notification['subject']['name']} · "
    context = _escaped(context + f"by {notification['actor']} · {notification['at']}")
    blocks: list[dict[str, Any]] = [
        {
            "type": "header",
            "text": {"type": "plain_text", "text": _clip(title, SLACK_HEADER_MAX)},
        }
    ]
    if text:
        blocks.append(
            {"type": "section", "text": {"type": "mrkdwn", "text": _clip(text, SLACK_SECTION_MAX)}}
        )
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": context}]})
    return {"text": f"{title}: {text}" if text else title, "blocks": blocks}


def _escaped(text: str) -> str:
    """Slack's mrkdwn reads <...> as links and mentions: a reason's "p < 0.05" stays text."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def post(client: httpx.Client, url: str, body: dict[str, Any], *, key: str) -> None:
    """One attempt; raises DeliveryFailed unless the receiver answered 2xx.

    ``key`` goes out as the Idempotency-Key header: delivery is at least once, and a
    receiver that keeps the keys it has seen can drop a repeat.
    """
    try:
        answer = client.post(url, json=body, headers={"Idempotency-Key": key})
    except httpx.HTTPError as exc:
        raise DeliveryFailed(f"{type(exc).__name__}: {exc}") from exc
    if not answer.is_success:
        raise DeliveryFailed(f"HTTP {answer.status_code}: {answer.text[:200]}")
