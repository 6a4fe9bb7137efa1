"""The meeting layer serves the page and its files, and nothing outside ``meeting/static``."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from meeting.page import add_page_routes


async def test_page_and_static_files_are_served_locally() -> None:
    app = web.Application()
    add_page_routes(app)
    async with TestClient(TestServer(app)) as client:
        await check_served(client)


async def check_served(client: TestClient[Any, Any]) -> None:
    for path in ("/", "/room/lobby"):
        response = await client.get(path)
        assert response.status == 200
        assert "<html" in (await response.text()).lower()
    assert (await client.get("/static/app.js")).status == 200
    for path in ("/static/../page.py", "/static/%2e%2e/page.py"):
        assert (await client.get(path)).status in (403, 404)
