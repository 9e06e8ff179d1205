"""Settings: the command-line options, the environment, ``tri24es.toml`` in the project root,
then the defaults, in that order of precedence (names and defaults kept from the TRI-24
scripts, the team's earlier shell fleet). Each value remembers where it came from, for
``tri24es config show``.

A plain dataclass and a table of parsers, not a pydantic model: every command loads the
settings first, and pydantic-settings with a model class cost each of them ~50 ms of start-up
(the budget of a whole command).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tri24es.errors import ConfigError
from tri24es.paths import ProjectPaths

if TYPE_CHECKING:
    from tri24es.events import Backoff, NoProgress
    from tri24es.witness import Witness

CONFIG_FILE = "tri24es.toml"


def _text(value: object) -> str:
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        raise ValueError("expected a string")
    return str(value)


def _money(value: object) -> Decimal:
    try:
        amount = Decimal(_text(value).strip())
    except InvalidOperation:
        raise ValueError("expected an amount in dollars, e.g. 75 or 0.50") from None
    if not amount.is_finite() or amount <= 0:
        raise ValueError("must be a finite amount greater than 0")
    return amount


def _money_or_none(value: object) -> Decimal:
    try:
        amount = Decimal(_text(value).strip())
    except InvalidOperation:
        raise ValueError("expected an amount in dollars, e.g. 1 or 0.50 (0: none)") from None
    if not amount.is_finite() or amount < 0:
        raise ValueError("must be a finite amount of 0 or more")
    return amount


def _fraction(value: object) -> Decimal:
    amount = _money(value)
    if amount > 1:
        raise ValueError("must be greater than 0 and at most 1 (e.g. 0.90)")
    return amount


def _seconds(value: object) -> float:
    try:
        seconds = float(_text(value).strip())
    except ValueError:
        raise ValueError("expected a number of seconds") from None
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError("must be a finite number of seconds greater than 0")
    return seconds


def _count(value: object) -> int:
    try:
        number = int(_text(value).strip())
    except ValueError:
        raise ValueError("expected a whole number") from None
    if number <= 0:
        raise ValueError("must be greater than 0")
    return number


def _window_seconds(value: object) -> int:
    seconds = _count(value)
    if seconds > 36_500 * 86_400:  # budget.LONGEST_WINDOW_SECONDS: a window of 100 years
        raise ValueError("must be at most 3153600000 seconds (100 years)")
    return seconds


def _synchronous(value: object) -> str:
    mode = _text(value).strip().upper()
    if mode not in ("OFF", "NORMAL", "FULL", "EXTRA"):  # eventlog.sqlite.SYNCHRONOUS_MODES
        raise ValueError("expected OFF, NORMAL, FULL or EXTRA")  # it was exit 1, at the open
    return mode


def _path(value: object) -> Path:
    return (value if isinstance(value, Path) else Path(_text(value))).expanduser()


@dataclass(frozen=True)
class Source:
    """Where a setting's value came from: ``default``, ``tri24es.toml``, ``env NAME`` or
    ``--option``."""

    kind: str
    name: str = ""

    def __str__(self) -> str:
        return f"{self.kind} {self.name}".strip()


def _from(env: str, parse: Callable[[object], Any]) -> dict[str, Any]:
    """A field's metadata: its environment variable and the parser of its values."""
    return {"env": env, "parse": parse}


@dataclass
class Settings:
    """Every setting, by the name it has in ``tri24es.toml`` (the environment variable is in
    each field's metadata)."""

    root: Path = field(default_factory=Path.cwd, metadata=_from("TRI24ES_ROOT", _path))
    db: str | None = field(default=None, metadata=_from("TRI24ES_DB", _text))
    busy_timeout: float = field(default=5.0, metadata=_from("TRI24ES_BUSY_TIMEOUT", _seconds))
    sqlite_synchronous: str = field(
        default="NORMAL", metadata=_from("TRI24ES_SQLITE_SYNCHRONOUS", _synchronous))

    # The seed's budget settings (DESIGN.md §8).
    budget_daily_limit: Decimal = field(
        default=Decimal("75.00"), metadata=_from("BUDGET_DAILY_LIMIT", _money))
    budget_rate_limit: Decimal = field(
        default=Decimal("1.00"), metadata=_from("BUDGET_RATE_LIMIT", _money))
    budget_rate_warning: Decimal = field(
        default=Decimal("0.50"), metadata=_from("BUDGET_RATE_WARNING", _money))
    budget_daily_pause_pct: Decimal = field(
        default=Decimal("0.90"), metadata=_from("BUDGET_DAILY_PAUSE_PCT", _fraction))
    budget_check_interval: float = field(
        default=30.0, metadata=_from("BUDGET_CHECK_INTERVAL", _seconds))
    budget_window_size: int = field(
        default=300, metadata=_from("BUDGET_WINDOW_SIZE", _window_seconds))
    # The zone whose calendar day "today's spend" means; None: the machine's zone.
    budget_timezone: str | None = field(default=None, metadata=_from("BUDGET_TIMEZONE", _text))
    # The largest amount one spend record may carry, from any source (CLI, file, agent).
    budget_max_spend_record: Decimal = field(
        default=Decimal("1000"), metadata=_from("BUDGET_MAX_SPEND_RECORD", _money))
    # What a claim reserves of today's daily limit for a task without max_budget_usd (one
    # with it reserves what it may still spend); 0: such tasks reserve nothing.
    budget_default_reservation: Decimal = field(
        default=Decimal(0), metadata=_from("BUDGET_DEFAULT_RESERVATION", _money_or_none))
    poll_interval: float = field(default=5.0, metadata=_from("POLL_INTERVAL", _seconds))
    # How long a queue file must stay unchanged before the watcher reads it (a file still
    # being written, in bursts, must not be submitted cut short).
    queue_settle: float = field(default=2.0, metadata=_from("TRI24ES_QUEUE_SETTLE", _seconds))
    worker_id: str | None = field(default=None, metadata=_from("WORKER_ID", _text))
    # A git repository: each attempt runs in a worktree of it (worker, up).
    repo: Path | None = field(default=None, metadata=_from("TRI24ES_REPO", _path))
    worker_shard: str | None = field(default=None, metadata=_from("WORKER_SHARD", _text))
    worker_model: str | None = field(default=None, metadata=_from("WORKER_MODEL", _text))
    trace_id: str | None = field(default=None, metadata=_from("TRACE_ID", _text))
    # TRI24ES_HOST_ID (this machine's identity; default the host name) is read in one place,
    # tri24es.procinfo.host_id(), since the services and runtime need it without settings.
    # Tokens of a model genai-prices cannot price are charged at this rate, never at $0.
    fallback_usd_per_mtok: Decimal = field(
        default=Decimal("75"), metadata=_from("TRI24ES_FALLBACK_USD_PER_MTOK", _money))
    # The witness (tri24es.witness): its key and checkpoints, kept where the database's
    # writers cannot reach them; default under state/witness/.
    witness_key: Path | None = field(default=None, metadata=_from("TRI24ES_WITNESS_KEY", _path))
    witness_file: Path | None = field(
        default=None, metadata=_from("TRI24ES_WITNESS_FILE", _path))
    witness_interval: float = field(
        default=60.0, metadata=_from("TRI24ES_WITNESS_INTERVAL", _seconds))
    # How long a failed task waits before its next attempt (tri24es.scheduling.parse_backoff).
    retry_backoff: str = field(default="5s..10m", metadata=_from("TRI24ES_RETRY_BACKOFF", _text))
    # How long a model is paused when its agent reports a usage limit without saying when
    # it resets (tri24es.inputs.usage_limits).
    usage_pause: str = field(default="1h", metadata=_from("TRI24ES_USAGE_PAUSE", _text))
    # The fleet's spend-without-progress rule, for tasks without their own (e.g. "$2 10m").
    no_progress: str = field(default="off", metadata=_from("TRI24ES_NO_PROGRESS", _text))

    sources: dict[str, Source] = field(default_factory=dict, repr=False, compare=False)

    @property
    def paths(self) -> ProjectPaths:
        return ProjectPaths(self.root)

    def retry_backoff_policy(self) -> Backoff:
        """``retry_backoff`` parsed (here, not at load: only commands that decide need it)."""
        from tri24es.scheduling import parse_backoff

        try:
            return parse_backoff(self.retry_backoff)
        except ValueError as e:
            raise ConfigError(f"TRI24ES_RETRY_BACKOFF: {e}") from None

    def usage_pause_seconds(self) -> int:
        """``usage_pause`` parsed (a delay such as ``1h`` or ``90m``)."""
        from tri24es.budget import parse_window

        try:
            return parse_window(self.usage_pause, longest=None)  # a pause: at most 31 days
        except ValueError as e:
            raise ConfigError(f"TRI24ES_USAGE_PAUSE: {e}") from None

    def no_progress_rule(self) -> NoProgress:
        """``no_progress`` parsed (``$2 10m`` or ``off``)."""
        from tri24es.scheduling import parse_no_progress

        try:
            return parse_no_progress(self.no_progress)
        except ValueError as e:
            raise ConfigError(f"TRI24ES_NO_PROGRESS: {e}") from None

    @property
    def witness(self) -> Witness:
        from tri24es.witness import Witness

        paths = self.paths
        return Witness(self.witness_key or paths.witness_key,
                       self.witness_file or paths.witness_file, paths.root)

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

    def shown(self) -> list[tuple[str, str, str, str]]:
        """Each setting as (name, environment variable, value, where it came from)."""
        rows = []
        for f in fields(self):
            if "env" in f.metadata:
                value = getattr(self, f.name)
                rows.append((f.name, f.metadata["env"], "" if value is None else str(value),
                             str(self.sources.get(f.name, Source("default")))))
        return rows


def load_settings(environ: Mapping[str, str] | None = None, **options: object) -> Settings:
    """Settings from ``options`` (the command line: ``db``, ``root``; None means not given),
    the environment, ``tri24es.toml`` in the root, then the defaults.

    A bad value becomes one ConfigError naming where it was set, never a traceback.
    """
    env = os.environ if environ is None else environ
    known = {f.name: f for f in fields(Settings) if "env" in f.metadata}
    values: dict[str, Any] = {}
    sources: dict[str, Source] = {}

    def take(name: str, raw: object, source: Source) -> None:
        try:
            values[name] = known[name].metadata["parse"](raw)
        except ValueError as e:
            where = f"{known[name].metadata['env']}=" if source.kind == "env" else (
                f"{name} in {CONFIG_FILE}: " if source.kind == CONFIG_FILE else f"{source}=")
            raise ConfigError(f"{where}{raw!r}: {e}") from None
        sources[name] = source

    def given(name: str) -> tuple[object, Source] | None:
        option = options.get(name)
        if option is not None:
            return option, Source(f"--{name.replace('_', '-')}")
        variable = known[name].metadata["env"]
        if variable in env:
            return env[variable], Source("env", variable)
        return None

    root = given("root")
    if root is not None:
        take("root", *root)
    for name, raw in _config_file(values.get("root", Path.cwd())).items():
        if name not in known or name == "root":
            import difflib

            close = difflib.get_close_matches(name, [n for n in known if n != "root"], n=1)
            hint = f" (did you mean {close[0]}?)" if close else " (see tri24es config show)"
            raise ConfigError(f"{name} in {CONFIG_FILE}: unknown setting{hint}")
        take(name, raw, Source(CONFIG_FILE))
    for name in known:
        found = given(name)
        if found is not None and name != "root":
            take(name, *found)
    _check_clock_offset(env)
    return Settings(**values, sources=sources)


def _check_clock_offset(env: Mapping[str, str]) -> None:
    """``TRI24ES_CLOCK_OFFSET_US`` (a test hook, read by ``eventlog.model`` at import, so no
    setting here): a malformed one was ignored, and a huge one a traceback where a time was
    stored; both are one line now."""
    raw = env.get("TRI24ES_CLOCK_OFFSET_US", "")
    if not raw.strip():
        return
    shown = repr(raw if len(raw) <= 40 else raw[:30] + "…")
    try:
        offset = int(raw.strip())
    except ValueError:  # (also past int's 4300 digits)
        raise ConfigError(f"TRI24ES_CLOCK_OFFSET_US={shown}: expected a whole number of "
                          "microseconds (negative: behind)") from None
    if abs(offset) > 36_500 * 86_400 * 1_000_000:  # eventlog.model.LARGEST_CLOCK_OFFSET_US
        raise ConfigError(f"TRI24ES_CLOCK_OFFSET_US={shown}: must be at most 100 years "
                          "(3153600000000000 microseconds) either way")


def _config_file(root: Path) -> dict[str, object]:
    """The table of ``tri24es.toml`` in ``root`` (empty if there is none)."""
    from tri24es.files import read_regular

    path = root / CONFIG_FILE
    try:
        data = read_regular(path)  # a FIFO there hung every command
    except FileNotFoundError:
        return {}
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror}") from e
    import tomllib

    try:
        table = tomllib.loads(data.decode("utf-8", errors="replace"))
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    return table
