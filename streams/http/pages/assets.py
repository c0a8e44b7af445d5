"""What the pages load besides themselves: the pinned browser libraries
(``/ui/static/vendor/<name>``, streams/http/webassets.py), the app's own static files
(``/ui/static``) and, in dev only, Swagger UI at ``/docs`` (FastAPI's CDN pages are off:
no third-party script on the patient pages' origin; outside dev ``/docs`` answers 404)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles

from streams.http.pages.common import render
from streams.http.webassets import VENDOR_FILES, WEB_DIR, node_modules
from streams.settings import Settings

STATIC_PATH = "/ui/static"


def router(settings: Settings) -> APIRouter:
    """``/docs`` (dev only) and the vendor files of this installation's cache."""
    assets = APIRouter(include_in_schema=False)
    if settings.env == "dev":
        assets.add_api_route("/docs", api_docs, methods=["GET"])
    assets.add_api_route(
        f"{STATIC_PATH}/vendor/{{name}}",
        VendorFiles(node_modules(settings)),
        methods=["GET"],
        name="vendor_file",
    )
    return assets


def static_files() -> StaticFiles:
    """The app's own CSS and scripts, mounted at ``STATIC_PATH`` (after ``router``'s vendor
    route, which it would otherwise shadow)."""
    return StaticFiles(directory=Path(WEB_DIR / "static"))


async def api_docs() -> HTMLResponse:
    """Swagger UI over /openapi.json, from the vendored pinned assets (no CDN)."""
    return render("docs.html")


class VendorFiles:
    """The pinned npm libraries, by a fixed list of names, from ``root`` (node_modules)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    async def __call__(self, name: str) -> FileResponse:
        rel = VENDOR_FILES.get(name)
        path = self.root / rel if rel else None
        if path is None or not path.is_file():
            raise HTTPException(404, f"no vendor file {name} (run make install)")
        return FileResponse(path, headers={"Cache-Control": "public, max-age=86400"})
