"""Fixtures shared by the whole suite: one local cloud per test session."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from plldb.localcloud.cloud import LocalCloud


@pytest.fixture(scope="session")
def local_cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCloud]:
    """The local cloud on ephemeral ports; this process's AWS variables point at it while it runs."""
    cloud = LocalCloud(work_dir=tmp_path_factory.mktemp("localcloud"))
    cloud.start()
    saved = {name: os.environ.get(name) for name in cloud.environment()}
    os.environ.update(cloud.environment())
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
        os.environ.pop(name, None)
    try:
        yield cloud
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        cloud.stop()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test that runs the local cloud is slow (`make unit-fast` leaves them out)."""
    for item in items:
        if "local_cloud" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)
