"""One process that stands in for the AWS services plldb uses, on 127.0.0.1 only.

moto serves the AWS APIs (with plldb's fidelity extensions), real Lambda execution environments run
the functions' code, and a WebSocket gateway plays API Gateway. Clients reach it through
AWS_ENDPOINT_URL and PLLDB_EXECUTE_API_ENDPOINT, so the product makes exactly the calls it would
make to AWS.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any

import boto3

from plldb.localcloud.constants import ACCOUNT_ID, DEFAULT_REGION
from plldb.protocol import EXECUTE_API_ENDPOINT_VARIABLE

__all__ = ["ACCOUNT_ID", "DEFAULT_REGION", "LambdaInvocationError", "LocalCloud"]
DEFAULT_PORT = 4566
DEFAULT_GATEWAY_PORT = 4510
# moto accepts any credentials; these make it obvious they are not real ones.
DUMMY_ACCESS_KEY_ID = "AKIALOCALCLOUDTEST00"
DUMMY_SECRET_ACCESS_KEY = "localcloud-secret-not-a-real-key"


class LambdaInvocationError(RuntimeError):
    """A Lambda integration failed (function error or invalid response), as API Gateway would see it."""

    def __init__(self, function_arn: str, error_type: str | None, payload: bytes) -> None:
        super().__init__(f"{function_arn} failed ({error_type}): {payload[:500]!r}")
        self.function_arn = function_arn
        self.error_type = error_type
        self.payload = payload


class LocalCloud:
    """Start with start(), stop with stop(); environment() is what a client exports to use it."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        gateway_port: int = 0,
        region: str = DEFAULT_REGION,
        work_dir: Path | None = None,
        limits: Any = None,
        schedule_timer: bool = True,
    ) -> None:
        self.host = host
        self.region = region
        self._requested_port = port
        self._requested_gateway_port = gateway_port
        self._limits = limits
        self._own_work_dir = work_dir is None
        self.work_dir = Path(work_dir or tempfile.mkdtemp(prefix="plldb-localcloud-"))
        self._server: Any = None
        self.gateway: Any = None
        self.lambdas: Any = None
        self.scheduler: Any = None
        self.iam_propagation: Any = None
        self.provisioned_concurrency: Any = None
        self.stepfunctions: Any = None
        self._schedule_timer = schedule_timer
        self.endpoint_url = ""
        self.execute_api_endpoint = ""
        self._clients: dict[tuple[str, str], Any] = {}
        self._clients_lock = threading.Lock()

    def start(self) -> LocalCloud:
        from moto.server import ThreadedMotoServer

        from plldb.localcloud import moto_extensions
        from plldb.localcloud.lambdas.manager import EnvironmentManager
        from plldb.localcloud.moto_extensions import (
            awslambda_invoke,
            awslambda_provisioned,
            iam_propagation,
            stepfunctions_executions,
        )
        from plldb.localcloud.scheduler import Scheduler
        from plldb.localcloud.websocket_gateway import WebSocketGateway, WebSocketLimits

        moto_extensions.install()
        self.iam_propagation = iam_propagation.PROPAGATION  # deny_next(principal, action, count) for tests
        # Provisioned concurrency allocations take allocation_seconds of its clock (tests replace the clock).
        self.provisioned_concurrency = awslambda_provisioned.PROVISIONING
        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request is noise here
        self._server = ThreadedMotoServer(ip_address=self.host, port=self._requested_port, verbose=False)
        self._server.start()
        _, port = self._server.get_host_and_port()
        self.endpoint_url = f"http://{self.host}:{port}"

        self.gateway = WebSocketGateway(
            invoke_lambda=self._invoke_lambda,
            host=self.host,
            port=self._requested_gateway_port,
            limits=self._limits or WebSocketLimits(),
            account_id=ACCOUNT_ID,
            region=self.region,
        )
        self.gateway.start()
        self.execute_api_endpoint = f"http://{self.host}:{self.gateway.port}"

        self.lambdas = EnvironmentManager(
            endpoint_url=self.endpoint_url,
            execute_api_endpoint=self.execute_api_endpoint,
            work_dir=self.work_dir / "lambda",
            account_id=ACCOUNT_ID,
            region=self.region,
        )
        awslambda_invoke.install(self.lambdas)
        # Step Functions tasks call this cloud; tests may replace self.stepfunctions.clock.
        self.stepfunctions = stepfunctions_executions.configure(self.endpoint_url)

        # EventBridge's scheduled rules fire on a timer (tests may also drive them with their own clock).
        self.scheduler = Scheduler(self._invoke_asynchronously, ACCOUNT_ID, self.region)
        if self._schedule_timer:
            self.scheduler.start()
        return self

    def stop(self) -> None:
        if self.stepfunctions is not None and self.stepfunctions.endpoint_url == self.endpoint_url:
            self.stepfunctions.endpoint_url = ""  # its tasks no longer have a cloud to call
        if self.scheduler is not None:
            self.scheduler.stop()
        if self.lambdas is not None:
            self.lambdas.shutdown()
        if self.gateway is not None:
            self.gateway.stop()
        if self._server is not None:
            self._server.stop()
        if self._own_work_dir:
            shutil.rmtree(self.work_dir, ignore_errors=True)

    def __enter__(self) -> LocalCloud:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def environment(self) -> dict[str, str]:
        """The variables a client (boto3, the AWS CLI, plldb) exports to talk to this cloud."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_ACCESS_KEY_ID": DUMMY_ACCESS_KEY_ID,
            "AWS_SECRET_ACCESS_KEY": DUMMY_SECRET_ACCESS_KEY,
            # One endpoint serves every host, so no SDK may prefix it ("sync-" for StartSyncExecution).
            "AWS_DISABLE_HOST_PREFIX_INJECTION": "true",
            EXECUTE_API_ENDPOINT_VARIABLE: self.execute_api_endpoint,
        }

    def session(self) -> boto3.Session:
        return boto3.Session(
            aws_access_key_id=DUMMY_ACCESS_KEY_ID,
            aws_secret_access_key=DUMMY_SECRET_ACCESS_KEY,
            region_name=self.region,
        )

    def client(self, service: str) -> Any:
        """A client of this cloud, made once per service: making one loads the service's model (tenths of a
        second), and botocore's clients are safe to share between threads."""
        key = (service, self.endpoint_url)
        with self._clients_lock:
            if key not in self._clients:
                self._clients[key] = self.session().client(  # type: ignore[call-overload]
                    service, endpoint_url=self.endpoint_url
                )
            return self._clients[key]

    def _invoke_asynchronously(self, function_arn: str, payload: bytes) -> None:
        """An Event invocation, as EventBridge invokes a rule's Lambda target."""
        self.lambdas.invoke(function_arn, payload, invocation_type="Event")

    def _invoke_lambda(self, function_arn: str, event: dict[str, Any]) -> Any:
        result = self.lambdas.invoke(function_arn, json.dumps(event).encode("utf-8"))
        if result.function_error:
            raise LambdaInvocationError(function_arn, result.function_error, result.payload)
        try:
            parsed = json.loads(result.payload or b"null")
        except ValueError:
            raise LambdaInvocationError(function_arn, "InvalidResponse", result.payload)
        return parsed
