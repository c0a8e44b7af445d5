"""Webhook secrets are sealed at rest and open only with the same key."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from pydantic import SecretStr

from streams.secrets import PREFIX, SecretBox, secret_box
from streams.settings import Settings


def test_sealed_secret_opens_with_its_key_only() -> None:
    box = SecretBox(Fernet.generate_key())
    sealed = box.seal("s3cret-for-hmac")
    assert sealed.startswith(PREFIX) and "s3cret" not in sealed
    assert box.open(sealed) == "s3cret-for-hmac"
    assert box.open("legacy-plain") == "legacy-plain"  # stored before encryption
    with pytest.raises(ValueError, match="another RTM_WEBHOOK_SECRET_KEY"):
        SecretBox(Fernet.generate_key()).open(sealed)


def test_dev_generates_a_private_key_once_and_prod_needs_one(tmp_path: Path) -> None:
    dev = Settings(state_dir=tmp_path, env="dev")
    sealed = secret_box(dev).seal("x")
    assert secret_box(dev).open(sealed) == "x"  # the same generated key next time
    assert (tmp_path / "webhook-secret-key").stat().st_mode & 0o077 == 0
    with pytest.raises(RuntimeError, match="RTM_WEBHOOK_SECRET_KEY"):
        secret_box(Settings(state_dir=tmp_path, env="prod"))
    key = Fernet.generate_key().decode()
    prod = Settings(state_dir=tmp_path, env="prod", webhook_secret_key=SecretStr(key))
    assert secret_box(prod).open(secret_box(prod).seal("y")) == "y"
