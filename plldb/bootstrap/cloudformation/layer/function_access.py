"""The layer's AWS access, with the function's own credentials only, and keeping the AWS SDK's records
of that access out of the function's log."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import botocore.session
from botocore.config import Config
from botocore.exceptions import ClientError

from plldb import lambda_common, protocol
from plldb.bootstrap.cloudformation.layer.settings import Settings

LOGGER = logging.getLogger("plldb.layer")

RETRY_DELAY_SECONDS = 0.25  # between attempts while a just-attached policy propagates

CLIENT_CONFIG = Config(
    connect_timeout=3,
    read_timeout=10,
    retries={"mode": "standard", "max_attempts": 3},
    tcp_keepalive=True,
)
# The dispatcher runs for at most its Timeout (15 s, template.yaml), after at most Lambda's 10 s init phase
# when its environment is cold: the layer waits that long, with room, for its answer.
DISPATCHER_READ_TIMEOUT_SECONDS = 40
DISPATCHER_CONFIG = Config(
    connect_timeout=3,
    read_timeout=DISPATCHER_READ_TIMEOUT_SECONDS,
    retries={"mode": "standard", "total_max_attempts": 1},
    tcp_keepalive=True,
)


class FunctionAccess:
    """The function's own clients: its items, its payload objects, the dispatcher. Built once.

    botocore rather than boto3: the same clients, and a quicker cold start. The credentials come from
    botocore's provider chain, so SnapStart's container credentials work as the environment's keys do.
    """

    def __init__(self, settings: Settings, sleep: Callable[[float], None] = time.sleep) -> None:
        self._settings = settings
        self._session = botocore.session.Session()
        self._clients: dict[str, Any] = {}
        self._sleep = sleep
        self.caller = ""  # aws:userid of the function's role session: role id:function name

    def client(self, service: str) -> Any:
        found = self._clients.get(service)
        if found is None:
            config = DISPATCHER_CONFIG if service == "lambda" else CLIENT_CONFIG
            found = self._session.create_client(service, region_name=self._settings.region, config=config)
            self._clients[service] = found
        return found

    def identify(self) -> str:
        """Who this function is to IAM (the partition of its items): one STS call per environment."""
        if not self.caller:
            self.caller = str(self.client("sts").get_caller_identity()["UserId"])
        return self.caller

    def credentials(self) -> dict[str, Any] | None:
        """The execution role's current credentials, for the handler's run on the developer's machine."""
        credentials = self._session.get_credentials()
        if credentials is None:
            return None
        frozen = credentials.get_frozen_credentials()
        return {
            "accessKeyId": frozen.access_key,
            "secretAccessKey": frozen.secret_key,
            "sessionToken": frozen.token,
        }

    def call(self, operation: Callable[[], Any]) -> Any:
        """One AWS call, retried while IAM has not yet propagated a policy plldb just attached."""
        deadline = time.monotonic() + protocol.IAM_PROPAGATION_SECONDS
        while True:
            try:
                return operation()
            except ClientError as exc:
                if not lambda_common.is_access_denied(exc) or time.monotonic() >= deadline:
                    raise
                LOGGER.info("plldb: access denied, waiting for IAM to propagate plldb's policy (%s)", exc)
            self._sleep(RETRY_DELAY_SECONDS)


# --- The function's log: the layer's own AWS traffic stays out of it -------------------------------------
# The AWS SDK logs through the standard loggers the function's log level controls: at INFO where it found
# credentials, at DEBUG every request with its body, which for the layer is the invocation's payload (the
# execution role's credentials, the environment, the session id). What the SDK logs about the layer's own
# calls is dropped; what it logs about the handler's calls (fallback passthrough) is the function's own.
_SDK_LOGGERS = ("botocore", "boto3", "urllib3", "s3transfer")
_work = threading.local()


@contextlib.contextmanager
def own_work(active: bool = True) -> Iterator[None]:
    """Mark what this thread does now as the layer's own (``active``) or as the function's handler's."""
    previous = getattr(_work, "own", False)
    _work.own = active
    try:
        yield
    finally:
        _work.own = previous


class OwnTrafficFilter(logging.Filter):
    """Drops the AWS SDK's records about the layer's own calls (see own_work)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (getattr(_work, "own", False) and record.name.split(".", 1)[0] in _SDK_LOGGERS)
