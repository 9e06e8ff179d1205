"""A database of its own for every PostgreSQL contender and round, on the one server all of
them share; every database made is dropped again, also when the run fails."""

from __future__ import annotations

import secrets
from contextlib import closing
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"


class PgServer:
    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.prefix = f"tri24es_bench_{secrets.token_hex(3)}"
        self.count = 0
        self.alive: list[str] = []

    def admin(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.dsn, autocommit=True)

    def fresh(self) -> str:
        """A new empty database: its DSN."""
        self.count += 1
        name = f"{self.prefix}_{self.count}"
        with closing(self.admin()) as conn:
            conn.execute(f'CREATE DATABASE "{name}"'.encode())
        self.alive.append(name)
        return self.dsn_of(name)

    def dsn_of(self, name: str) -> str:
        parts = urlsplit(self.dsn)
        return urlunsplit(parts._replace(path=f"/{name}"))

    def drop(self, dsn: str) -> None:
        name = urlsplit(dsn).path.lstrip("/")
        with closing(self.admin()) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'.encode())
        if name in self.alive:
            self.alive.remove(name)

    def close(self) -> None:
        for name in list(self.alive):
            self.drop(self.dsn_of(name))

    def settings(self) -> dict[str, str]:
        """The server's version and the settings that decide commit speed."""
        with closing(self.admin()) as conn:
            rows = conn.execute("SELECT name, setting FROM pg_settings WHERE name IN"
                                " ('server_version', 'synchronous_commit', 'fsync',"
                                " 'shared_buffers', 'max_connections', 'wal_level')").fetchall()
        return {name: setting for name, setting in rows}


def es_params(dsn: str) -> dict[str, Any]:
    """eventsourcing's settings for a DSN (it takes them one by one)."""
    parts = urlsplit(dsn)
    return {"dbname": parts.path.lstrip("/"), "host": parts.hostname or "127.0.0.1",
            "port": parts.port or 5432, "user": parts.username or "postgres",
            "password": parts.password or ""}


def available(dsn: str) -> str | None:
    """None if the server answers, else why not."""
    try:
        with closing(psycopg.connect(dsn, connect_timeout=5)):
            return None
    except psycopg.Error as e:
        return str(e).strip().splitlines()[0]
