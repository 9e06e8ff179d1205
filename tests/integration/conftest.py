"""Shared fixtures of the integration tests: fresh stores of either backend for the tests
that must hold on both. The PostgreSQL fixtures (``pg_dsn``, ``new_schema``,
``with_schema``) live in tests/conftest.py, shared with the end-to-end tests."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import with_schema

__all__ = ["with_schema"]  # tests import it from here too

BACKENDS = ("sqlite", "postgresql")


@pytest.fixture(params=BACKENDS)
def new_url(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], str]:
    """Hands out the URLs of fresh, empty stores; the test runs once per backend."""
    if request.param == "postgresql":
        dsn: str = request.getfixturevalue("pg_dsn")
        schema: Callable[[], str] = request.getfixturevalue("new_schema")
        return lambda: with_schema(dsn, schema())
    paths = (tmp_path / f"store-{n}.db" for n in itertools.count())
    return lambda: str(next(paths))
