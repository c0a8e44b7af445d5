"""Files the CLI writes that may hold patient data (claims, 837P files, FHIR bundles,
cohorts, demographics): created owner-only (0600) before any content is written, and an
existing file is narrowed to 0600 first (``open`` keeps an existing file's mode)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO

PRIVATE_MODE = 0o600


def open_private(path: Path, buffering: int = -1) -> BinaryIO:
    """``path`` opened for writing (truncated), mode 0600 before the first byte."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_MODE)
    try:
        os.fchmod(fd, PRIVATE_MODE)
        return os.fdopen(fd, "wb", buffering=buffering)
    except BaseException:
        os.close(fd)
        raise


def write_private(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path``, mode 0600."""
    with open_private(path) as f:
        f.write(text.encode("utf-8"))
