"""The API on a real socket for the length of a block (the simulated shift's robots use it)."""

from __future__ import annotations

import httpx
import pytest

from services.api.server import api_in_background


def test_the_api_answers_over_http_inside_the_block_and_stops_after(settings):
    with api_in_background() as base_url:
        assert base_url.startswith("http://127.0.0.1:")
        assert httpx.get(f"{base_url}/live").json() == {"status": "ok"}
        anonymous = httpx.get(f"{base_url}/robots/robot-77/assignment")
        assert anonymous.status_code == 401 and "robot credential" in anonymous.text
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{base_url}/live")
