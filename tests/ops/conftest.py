"""The session's stack (tests/ops/servers.py), shared with tests/browser."""

from __future__ import annotations

import pytest

from tests.ops.servers import RunningStack, get_stack, shutdown_stack


@pytest.fixture(scope="session")
def stack() -> RunningStack:
    return get_stack()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    shutdown_stack()
