"""A moto server with plldb's extensions, for the local cloud's own tests (no Lambda runtime, no gateway)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

from plldb.localcloud import moto_extensions

REGION = "us-east-1"
ACCOUNT_ID = "123456789012"


@dataclass
class MotoServer:
    endpoint_url: str
    session: boto3.Session

    def client(self, service: str) -> Any:
        return self.session.client(service)  # type: ignore[call-overload]


class EndpointSession(boto3.Session):
    """A boto3 Session whose clients all talk to the given endpoint (as AWS_ENDPOINT_URL would do)."""

    def __init__(self, endpoint_url: str) -> None:
        super().__init__(aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION)
        self._endpoint_url = endpoint_url

    def client(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("endpoint_url", self._endpoint_url)
        return super().client(*args, **kwargs)


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    moto_extensions.install()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint_url = f"http://{host}:{port}"
    try:
        yield MotoServer(endpoint_url=endpoint_url, session=EndpointSession(endpoint_url))
    finally:
        server.stop()


@pytest.fixture
def session(moto_server: MotoServer) -> boto3.Session:
    return moto_server.session
