from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from gateway_support import Fake

from support import Server


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """Start real servers on free ports, each writing to ``tmp_path/warehouse``; stopped after the test."""
    servers: list[Server] = []

    def start(*args: str, warehouse: Path | None = None, env: dict[str, str] | None = None) -> Server:
        server = Server(warehouse or tmp_path / "warehouse", *args, env=env)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="module")
def fake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fake]:
    """The fake model providers (tests/fake_providers.py) in their own process, one per module."""
    server = Fake(tmp_path_factory.mktemp("fake"))
    yield server
    server.stop()
