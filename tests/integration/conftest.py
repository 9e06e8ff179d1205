"""Shared fixtures of the integration tests."""

from __future__ import annotations

import os

import pytest


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
