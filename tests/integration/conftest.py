"""Shared fixtures of the integration tests: the PostgreSQL server, and fresh stores of
either backend for the tests that must hold on both."""

from __future__ import annotations

import itertools
import os
import secrets
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path

import pytest

RUN = f"t{os.getpid()}_{secrets.token_hex(3)}"
_numbers = itertools.count()

BACKENDS = ("sqlite", "postgresql")


def with_schema(dsn: str, schema: str) -> str:
    """``dsn`` with ``schema`` first on its search path: a store of its own."""
    return f"{dsn}{'&' if '?' in dsn else '?'}options=-csearch_path%3D{schema}"


@pytest.fixture(scope="session")
def pg_dsn() -> str:
    """The PostgreSQL server of the PostgreSQL tests (TRI24ES_TEST_PG_DSN).

    Without it the tests are skipped, unless TRI24ES_REQUIRE_PG=1 (as in CI): then they fail.
    """
    dsn = os.environ.get("TRI24ES_TEST_PG_DSN", "")
    if not dsn:
        if os.environ.get("TRI24ES_REQUIRE_PG") == "1":
            pytest.fail(
                "TRI24ES_REQUIRE_PG=1 but TRI24ES_TEST_PG_DSN is not set", pytrace=False
            )
        pytest.skip("set TRI24ES_TEST_PG_DSN to run PostgreSQL tests")
    return dsn


@pytest.fixture
def new_schema(pg_dsn: str) -> Iterator[Callable[[], str]]:
    """Hands out fresh schema names of this test run; drops them all afterwards."""
    import psycopg

    made: list[str] = []

    def new() -> str:
        made.append(f"{RUN}_{next(_numbers)}")
        return made[-1]

    yield new
    with closing(psycopg.connect(pg_dsn, autocommit=True)) as admin:
        for schema in made:
            admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'.encode())


@pytest.fixture(params=BACKENDS)
def new_url(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], str]:
    """Hands out the URLs of fresh, empty stores; the test runs once per backend."""
    if request.param == "postgresql":
        dsn: str = request.getfixturevalue("pg_dsn")
        schema: Callable[[], str] = request.getfixturevalue("new_schema")
        return lambda: with_schema(dsn, schema())
    paths = (tmp_path / f"store-{n}.db" for n in itertools.count())
    return lambda: str(next(paths))
