"""The dashboard's browser libraries (htmx, uPlot; Swagger UI for the dev /docs): pinned
in streams/http/web/package.json and package-lock.json, installed by ``npm ci`` into the cache
(never into the repository), under a folder named by the lock file's hash, so a changed
lock installs anew and an unchanged one is reused by every clone and test run."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

from streams.settings import Settings

WEB_DIR = Path(__file__).parent / "web"
LOCK = WEB_DIR / "package-lock.json"
# What the gateway serves under /ui/static/vendor/<name>: path inside node_modules
VENDOR_FILES = {
    "htmx.min.js": "htmx.org/dist/htmx.min.js",
    "uPlot.iife.min.js": "uplot/dist/uPlot.iife.min.js",
    "uPlot.min.css": "uplot/dist/uPlot.min.css",
    # Swagger UI for /docs (RTM_ENV=dev only): served from here, never from a CDN
    "swagger-ui-bundle.js": "swagger-ui-dist/swagger-ui-bundle.js",
    "swagger-ui.css": "swagger-ui-dist/swagger-ui.css",
}


def vendor_root(settings: Settings) -> Path:
    digest = hashlib.sha256(LOCK.read_bytes()).hexdigest()[:16]
    return settings.provision.cache_dir / "web" / digest


def node_modules(settings: Settings) -> Path:
    return vendor_root(settings) / "node_modules"


def installed(settings: Settings) -> bool:
    return all((node_modules(settings) / p).is_file() for p in VENDOR_FILES.values())


def ensure_vendor(settings: Settings) -> Path:
    """``npm ci`` the locked packages into the cache unless already there (idempotent)."""
    root = vendor_root(settings)
    if installed(settings):
        return root
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError(
            "npm is needed to install the dashboard's libraries (apt-get install npm)"
        )
    root.mkdir(parents=True, exist_ok=True)
    for name in ("package.json", "package-lock.json"):
        shutil.copyfile(WEB_DIR / name, root / name)
    subprocess.run(
        [npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=root,
        check=True,
        timeout=600,
    )
    if not installed(settings):
        raise RuntimeError(f"npm ci in {root} did not install {sorted(VENDOR_FILES.values())}")
    return root


if __name__ == "__main__":  # `make install`: python -m streams.http.webassets
    print(ensure_vendor(Settings()))
