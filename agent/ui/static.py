"""The UI's static files (``static/``: ``ui.css``, ``ui.js``, the vendored libraries), served from the
package: the set of files is read once, so a path names one of them or nothing (no traversal)."""

from __future__ import annotations

import functools
import mimetypes
from pathlib import Path

from aiohttp import web

from agent.errors import NotFound

ROOT = Path(__file__).resolve().parent / "static"
CACHE = "public, max-age=3600"
TYPES = {".js": "text/javascript", ".css": "text/css", ".md": "text/markdown", "": "text/plain"}


@functools.cache
def files() -> dict[str, Path]:
    return {p.relative_to(ROOT).as_posix(): p for p in ROOT.rglob("*") if p.is_file()}


async def asset(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    path = files().get(name)
    if path is None:
        raise NotFound(f"no static file {name!r}", field="name")
    kind = TYPES.get(path.suffix) or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return web.FileResponse(path, headers={"Cache-Control": CACHE, "Content-Type": kind})


__all__ = ["ROOT", "asset", "files"]
