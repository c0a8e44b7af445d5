"""The dependency direction rtm -> agents -> streams -> alerts -> billing -> schemas, and
infra importing none of them (import-linter contracts in pyproject.toml): a lower layer
never imports a higher one."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_packages_import_only_the_layers_below_them() -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    proc = subprocess.run(
        [str(lint), "--no-cache", "--no-logo"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert " 0 broken" in proc.stdout and "streams in four rooms" in proc.stdout
