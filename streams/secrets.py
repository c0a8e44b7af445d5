"""Webhook secrets encrypted at rest (Fernet: AES-128-CBC + HMAC-SHA256, from the
`cryptography` package) with a key from the environment (``RTM_WEBHOOK_SECRET_KEY``).

The HMAC signature needs the secret itself, so it cannot be hashed like a key; a database
dump or backup without the environment's key gives no usable secret. In ``RTM_ENV=dev``
without a configured key, one is generated once into ``<state dir>/webhook-secret-key``
(0600). A stored value without the ``fernet:`` prefix is a secret from before encryption:
it is used as it is and sealed the next time the webhook is set.
"""

from __future__ import annotations

from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from streams.settings import Settings

PREFIX = "fernet:"
DEV_KEY_FILE = "webhook-secret-key"


class SecretBox:
    def __init__(self, key: bytes) -> None:
        self._fernet = Fernet(key)

    def seal(self, secret: str) -> str:
        return PREFIX + self._fernet.encrypt(secret.encode()).decode()

    def open(self, stored: str) -> str:
        if not stored.startswith(PREFIX):
            return stored  # stored before encryption at rest
        try:
            return self._fernet.decrypt(stored[len(PREFIX) :].encode()).decode()
        except InvalidToken:
            raise ValueError("webhook secret sealed with another RTM_WEBHOOK_SECRET_KEY") from None


def secret_box(settings: Settings) -> SecretBox:
    """The box for these settings: the configured key, or (dev only) the generated one."""
    if settings.webhooks.secret_key is not None:
        return SecretBox(settings.webhooks.secret_key.get_secret_value().encode())
    if settings.env != "dev":
        raise RuntimeError(
            "set RTM_WEBHOOK_SECRET_KEY (a Fernet key: "
            "python -c 'from cryptography.fernet import Fernet; "
            "print(Fernet.generate_key().decode())')"
        )
    path: Path = settings.state_dir / DEV_KEY_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_bytes(Fernet.generate_key())
    return SecretBox(path.read_bytes().strip())
