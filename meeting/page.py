"""The meeting page: ``GET /`` and ``GET /room/{room}`` serve ``meeting/static/index.html``,
``GET /static/...`` the page's own files. Nothing is loaded from anywhere else."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

STATIC_DIR = Path(__file__).resolve().parent / "static"


def add_page_routes(app: web.Application) -> None:
    """Serves the meeting page on ``app``."""

    async def page(request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    app.router.add_get("/", page)
    app.router.add_get("/room/{room}", page)
    app.router.add_static("/static/", STATIC_DIR)
