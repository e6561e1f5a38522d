"""Fixtures shared by the whole suite: one local cloud per test session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from plldb.localcloud.cloud import LocalCloud
from tests.cloud_state import pointed_at


@pytest.fixture(scope="session")
def local_cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCloud]:
    """The local cloud on ephemeral ports; this process's AWS variables point at it while it runs."""
    cloud = LocalCloud(work_dir=tmp_path_factory.mktemp("localcloud"))
    cloud.start()
    try:
        with pointed_at(cloud.environment()):
            yield cloud
    finally:
        cloud.stop()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test that runs the local cloud is slow (`make unit-fast` leaves them out)."""
    for item in items:
        if "local_cloud" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)
