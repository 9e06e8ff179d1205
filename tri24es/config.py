"""Settings, read from the environment (names and defaults kept from the TRI-24 scripts)."""

from __future__ import annotations

import os
import time
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

from pydantic import AliasChoices, Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from tri24es.errors import ConfigError
from tri24es.paths import ProjectPaths

if TYPE_CHECKING:
    from tri24es.events import Backoff

PositiveMoney = Annotated[Decimal, Field(gt=0, allow_inf_nan=False)]
Seconds = Annotated[float, Field(gt=0, allow_inf_nan=False)]

def env(name: str) -> AliasChoices:
    return AliasChoices(name)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    root: Path = Field(default_factory=Path.cwd, validation_alias=env("TRI24ES_ROOT"))
    db: str | None = Field(default=None, validation_alias=env("TRI24ES_DB"))
    busy_timeout: Seconds = Field(default=5.0, validation_alias=env("TRI24ES_BUSY_TIMEOUT"))
    sqlite_synchronous: str = Field(
        default="NORMAL", validation_alias=env("TRI24ES_SQLITE_SYNCHRONOUS")
    )

    # The seed's budget settings (DESIGN.md §8).
    budget_daily_limit: PositiveMoney = Field(
        default=Decimal("75.00"), validation_alias=env("BUDGET_DAILY_LIMIT")
    )
    budget_rate_limit: PositiveMoney = Field(
        default=Decimal("1.00"), validation_alias=env("BUDGET_RATE_LIMIT")
    )
    budget_rate_warning: PositiveMoney = Field(
        default=Decimal("0.50"), validation_alias=env("BUDGET_RATE_WARNING")
    )
    budget_daily_pause_pct: Annotated[Decimal, Field(gt=0, le=1)] = Field(
        default=Decimal("0.90"), validation_alias=env("BUDGET_DAILY_PAUSE_PCT")
    )
    budget_check_interval: Seconds = Field(
        default=30.0, validation_alias=env("BUDGET_CHECK_INTERVAL")
    )
    budget_window_size: Annotated[int, Field(gt=0)] = Field(
        default=300, validation_alias=env("BUDGET_WINDOW_SIZE")
    )
    # The zone whose calendar day "today's spend" means; None: the machine's zone.
    budget_timezone: str | None = Field(default=None, validation_alias=env("BUDGET_TIMEZONE"))
    # The largest amount one spend record may carry, from any source (CLI, file, agent).
    budget_max_spend_record: PositiveMoney = Field(
        default=Decimal("1000"), validation_alias=env("BUDGET_MAX_SPEND_RECORD")
    )
    poll_interval: Seconds = Field(default=5.0, validation_alias=env("POLL_INTERVAL"))
    worker_id: str | None = Field(default=None, validation_alias=env("WORKER_ID"))
    # A git repository: each attempt runs in a worktree of it (worker, up).
    repo: Path | None = Field(default=None, validation_alias=env("TRI24ES_REPO"))
    worker_shard: str | None = Field(default=None, validation_alias=env("WORKER_SHARD"))
    worker_model: str | None = Field(default=None, validation_alias=env("WORKER_MODEL"))
    trace_id: str | None = Field(default=None, validation_alias=env("TRACE_ID"))
    # TRI24ES_HOST_ID (this machine's identity; default the host name) is read in one place,
    # tri24es.procinfo.host_id(), since the services and runtime need it without settings.
    # Tokens of a model genai-prices cannot price are charged at this rate, never at $0.
    fallback_usd_per_mtok: PositiveMoney = Field(
        default=Decimal("75"), validation_alias=env("TRI24ES_FALLBACK_USD_PER_MTOK")
    )
    # How long a failed task waits before its next attempt (tri24es.scheduling.parse_backoff).
    retry_backoff: str = Field(default="5s..10m", validation_alias=env("TRI24ES_RETRY_BACKOFF"))

    def retry_backoff_policy(self) -> Backoff:
        """``retry_backoff`` parsed (here, not at load: only commands that decide need it)."""
        from tri24es.scheduling import parse_backoff

        try:
            return parse_backoff(self.retry_backoff)
        except ValueError as e:
            raise ConfigError(f"TRI24ES_RETRY_BACKOFF: {e}") from None

    @property
    def paths(self) -> ProjectPaths:
        return ProjectPaths(self.root)

    @property
    def db_url(self) -> str:
        """``TRI24ES_DB`` (a URL or a path), else ``state/tri24es.db`` under the root."""
        return self.db or str(self.paths.default_db)

    @property
    def absolute_db_url(self) -> str:
        """``db_url`` with a SQLite path made absolute: for agents and child processes, which
        may run in another folder."""
        from eventlog import sqlite_path

        path = sqlite_path(self.db_url)
        return self.db_url if path is None else str(Path(path).resolve())

    def default_worker_id(self) -> str:
        return self.worker_id or f"worker-{os.getpid()}-{int(time.time())}"


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment, with ``overrides`` (CLI options) on top.

    A bad value becomes one ConfigError naming the variable, never a traceback.
    """
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings(**given)  # type: ignore[arg-type]
    except ValidationError as e:
        err = e.errors()[0]
        field = str(err["loc"][0]) if err["loc"] else "settings"
        info = Settings.model_fields.get(field)
        alias = info.validation_alias if info is not None else None
        name = alias.choices[0] if isinstance(alias, AliasChoices) else field
        raise ConfigError(f"{name}={err.get('input')!r}: {err['msg']}") from e
