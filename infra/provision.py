"""What provisioning the local services needs and nothing that runs reads: the versions
``rtm up`` installs, where it caches downloads and builds, the local broker's controller
port and the PostgreSQL cluster's folder. Read from the same ``RTM_*`` variables as always
(``RTM_CACHE_DIR``, ``RTM_KAFKA_VERSION``, ``RTM_TIMESCALEDB_VERSION``,
``RTM_KAFKA_CONTROLLER_PORT``, ``RTM_PG_DATA_DIR``); the project's ``Settings`` carries one
as its ``provision`` section."""

from __future__ import annotations

import hashlib
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ProvisionSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="RTM_", frozen=True, extra="forbid", hide_input_in_errors=True
    )

    cache_dir: Path = Field(default_factory=lambda: Path.home() / ".cache" / "rtm-stream")
    kafka_version: str = "3.9.1"
    timescaledb_version: str = "2.19.3"
    kafka_controller_port: int = 19093
    pg_data_dir: Path | None = None  # default: outside the clone, readable by user postgres

    def pg_data_path(self, state_dir: Path) -> Path:
        """The cluster's folder: ``RTM_PG_DATA_DIR``, else one per state dir under
        /var/tmp (the postgres user must reach it; /root and CI's clone may not be
        traversable)."""
        if self.pg_data_dir is not None:
            return self.pg_data_dir
        tag = hashlib.sha1(str(state_dir.resolve()).encode()).hexdigest()[:10]
        return Path("/var/tmp/rtm-stream") / tag / "pgdata"
