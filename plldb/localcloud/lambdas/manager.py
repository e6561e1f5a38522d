"""The Lambda service's data plane: warm, per-function pools of execution environments and Invoke's semantics."""

from __future__ import annotations

import atexit
import base64
import binascii
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from random import random as random_fraction
from typing import Any

from plldb.localcloud.lambdas.environment import ExecutionEnvironment, _ManagerContext, _trace_id
from plldb.localcloud.lambdas.specs import (
    ASYNC_PAYLOAD_LIMIT,
    DEFAULT_ACCOUNT_ID,
    FUNCTION_ERROR_UNHANDLED,
    IDLE_ENVIRONMENT_SECONDS,
    INVOCATION_TYPES,
    LOG_TAIL_BYTES,
    SYNC_PAYLOAD_LIMIT,
    FunctionSpec,
    InvalidRequestContentException,
    InvocationResult,
    RequestEntityTooLargeException,
    ServiceShutDown,
    TooManyRequestsException,
    ValidationException,
    _ArtifactCache,
    _function_arn,
    function_spec,
)
from plldb.localcloud.moto_extensions.awslambda_versions import aliases_of, routing_weights, split_qualifier
from plldb.localcloud.runtime_api import Invocation

logger = logging.getLogger(__name__)


# --- The manager ---------------------------------------------------------------------------------------
@dataclass
class _Pool:
    fingerprint: str = ""
    environments: list[ExecutionEnvironment] = field(default_factory=list)


class EnvironmentManager:
    """Runs Lambda invocations in warm, per-function pools of real execution environments.

    Thread-safe: concurrent invocations of one function run in separate environments; an idle
    environment is reused; a changed configuration or code retires the old environments.
    """

    def __init__(
        self,
        endpoint_url: str,
        execute_api_endpoint: str,
        work_dir: Path,
        account_id: str = DEFAULT_ACCOUNT_ID,
        region: str = "us-east-1",
        *,
        idle_seconds: float = IDLE_ENVIRONMENT_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        random: Callable[[], float] = random_fraction,
    ) -> None:
        self.endpoint_url = endpoint_url
        self.random = random  # [0, 1): picks an alias's version by its routing weights
        self.idle_seconds = idle_seconds
        self._clock = clock
        self.execute_api_endpoint = execute_api_endpoint
        self.work_dir = Path(work_dir)
        self.account_id = account_id
        self.region = region
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self._context = _ManagerContext(
            endpoint_url, execute_api_endpoint, self.work_dir, _ArtifactCache(self.work_dir / "artifacts")
        )
        self._lock = threading.Lock()
        self._pools: dict[tuple[str, str, str, str], _Pool] = {}
        self._closed = False
        atexit.register(self.shutdown)

    # --- Public API -----------------------------------------------------------------------------------
    def invoke(
        self,
        function_name_or_arn: str,
        payload: bytes,
        invocation_type: str = "RequestResponse",
        client_context: str | None = None,
        qualifier: str | None = None,
    ) -> InvocationResult:
        """Invoke a function as Lambda's Invoke API does; client_context is base64 JSON, as in the API."""
        account_id, region = self.account_id, self.region
        if function_name_or_arn.startswith("arn:"):
            parts = function_name_or_arn.split(":")
            if len(parts) >= 7:
                region, account_id = parts[3], parts[4]
        return self.invoke_in(
            account_id,
            region,
            function_name_or_arn,
            payload,
            invocation_type=invocation_type,
            client_context=client_context,
            qualifier=qualifier,
        )

    def invoke_in(
        self,
        account_id: str,
        region: str,
        function_name_or_arn: str,
        payload: bytes,
        *,
        invocation_type: str = "RequestResponse",
        client_context: str | None = None,
        qualifier: str | None = None,
    ) -> InvocationResult:
        """Invoke with an explicit account and region (the caller's, for an unqualified function name)."""
        from moto.awslambda.models import lambda_backends

        if invocation_type not in INVOCATION_TYPES:
            raise ValidationException(
                f"1 validation error detected: Value '{invocation_type}' at 'invocationType' failed to "
                "satisfy constraint: Member must satisfy enum value set: [Event, RequestResponse, DryRun]"
            )
        backend = lambda_backends[account_id][region]
        name, explicit = split_qualifier(function_name_or_arn, qualifier)
        version = explicit
        alias = aliases_of(backend._lambdas, name).get(explicit or "")
        if alias is not None:
            version = self._routed_version(alias)
        fn = backend.get_function(name, version)
        invoked_arn = _invoked_arn(region, account_id, fn.function_name, function_name_or_arn, qualifier)
        return self.invoke_function(fn, payload, invocation_type, client_context, invoked_arn)

    def _routed_version(self, alias: Any) -> str:
        """The version an invocation of the alias runs: an additional version with its weight's
        probability, else the alias's own (Lambda's weighted alias routing)."""
        draw = self.random()
        cumulative = 0.0
        for version, weight in sorted(routing_weights(alias).items()):
            cumulative += weight
            if draw < cumulative:
                return version
        return str(alias.function_version)

    def invoke_function(
        self,
        fn: Any,
        payload: bytes,
        invocation_type: str = "RequestResponse",
        client_context: str | None = None,
        invoked_function_arn: str | None = None,
    ) -> InvocationResult:
        """Invoke a moto LambdaFunction object (used by moto's own internal invocations too)."""
        limit = ASYNC_PAYLOAD_LIMIT if invocation_type == "Event" else SYNC_PAYLOAD_LIMIT
        if len(payload) > limit:
            raise RequestEntityTooLargeException(limit)
        event = _validated_event(payload)
        context_json = _decoded_client_context(client_context)
        spec = function_spec(fn, fn.account_id, fn.region)
        arn = invoked_function_arn or fn.function_arn
        if invocation_type == "DryRun":
            return InvocationResult(204, b"", None, "", spec.version)
        if self._closed:
            raise ServiceShutDown("the local Lambda service has been shut down")
        if invocation_type == "Event":
            worker = threading.Thread(
                target=self._run_event,
                args=(spec, event, arn, context_json),
                name="lambda-event",
                daemon=True,
            )
            worker.start()
            return InvocationResult(202, b"", None, "", spec.version)
        return self._run(spec, event, arn, context_json, throttle=True)

    def discard(self, account_id: str, region: str, function_name: str, version: str | None = None) -> None:
        """Retire a deleted function's environments (all versions, or one)."""
        doomed: list[ExecutionEnvironment] = []
        with self._lock:
            for key in list(self._pools):
                if key[:3] == (account_id, region, function_name) and version in (None, key[3]):
                    pool = self._pools.pop(key)
                    for environment in pool.environments:
                        if environment.busy:
                            environment.retire()
                        else:
                            doomed.append(environment)
        for environment in doomed:
            environment.stop()

    def environments(self) -> list[ExecutionEnvironment]:
        """Every live environment (for diagnostics: pids, log paths)."""
        with self._lock:
            return [env for pool in self._pools.values() for env in pool.environments]

    def shutdown(self) -> None:
        """Stop every environment (no orphan processes); further invocations are refused."""
        with self._lock:
            self._closed = True
            doomed = [env for pool in self._pools.values() for env in pool.environments]
            self._pools.clear()
        for environment in doomed:
            environment.kill()
        for environment in doomed:
            environment.stop()
        atexit.unregister(self.shutdown)

    # --- Internals ---------------------------------------------------------------------------------------
    def _run_event(self, spec: FunctionSpec, event: bytes, arn: str, context_json: str | None) -> None:
        try:
            result = self._run(spec, event, arn, context_json)
        except ServiceShutDown:
            return
        except Exception:
            logger.exception("asynchronous invocation of %s failed", spec.function_name)
            return
        if result.function_error:
            logger.info("asynchronous invocation of %s failed: %s", spec.function_name, result.payload[:1000])

    def _run(
        self, spec: FunctionSpec, event: bytes, arn: str, context_json: str | None, *, throttle: bool = False
    ) -> InvocationResult:
        """Run one invocation in a pooled environment; throttle enforces reserved concurrency."""
        invocation = Invocation(
            request_id=str(uuid.uuid4()),
            payload=event,
            invoked_function_arn=arn,
            timeout_seconds=spec.timeout,
            trace_id=_trace_id(),
            client_context=context_json,
        )
        environment = self._acquire(spec, throttle=throttle)
        try:
            outcome, log = environment.run(invocation)
        finally:
            self._release(environment)
        try:
            environment.publish_to_cloudwatch(log)
        except Exception:
            logger.debug("could not copy the invocation log to CloudWatch Logs", exc_info=True)
        return InvocationResult(
            status_code=200,
            payload=outcome.payload,
            function_error=FUNCTION_ERROR_UNHANDLED if outcome.is_error else None,
            log_result=base64.b64encode(log[-LOG_TAIL_BYTES:]).decode("ascii"),
            executed_version=spec.version,
            request_id=invocation.request_id,
        )

    def _acquire(self, spec: FunctionSpec, *, throttle: bool = False) -> ExecutionEnvironment:
        """An idle matching environment, or a new one; stale idle ones are stopped on the way."""
        doomed: list[ExecutionEnvironment] = []
        with self._lock:
            if self._closed:
                raise ServiceShutDown("the local Lambda service has been shut down")
            if throttle and spec.reserved_concurrency is not None:
                running = sum(
                    1
                    for key, other in self._pools.items()
                    if key[:3] == spec.pool_key[:3]
                    for environment in other.environments
                    if environment.busy
                )
                if running >= spec.reserved_concurrency:
                    raise TooManyRequestsException()
            doomed += self._take_idle_environments()
            pool = self._pools.setdefault(spec.pool_key, _Pool())
            pool.fingerprint = spec.fingerprint
            chosen = None
            for environment in list(pool.environments):
                if environment.busy:
                    continue
                if environment.fingerprint != spec.fingerprint or not environment.reusable:
                    pool.environments.remove(environment)
                    doomed.append(environment)
                elif chosen is None:
                    chosen = environment
            if chosen is None:
                chosen = ExecutionEnvironment(spec, self._context)
                pool.environments.append(chosen)
            chosen.busy = True
        for environment in doomed:
            environment.stop()
        return chosen

    def _take_idle_environments(self) -> list[ExecutionEnvironment]:
        """Remove, under the lock, the environments idle for longer than idle_seconds (stopped by the caller)."""
        cutoff = self._clock() - self.idle_seconds
        idle = []
        for pool in self._pools.values():
            for environment in list(pool.environments):
                if not environment.busy and environment.idle_since < cutoff:
                    pool.environments.remove(environment)
                    idle.append(environment)
        return idle

    def _release(self, environment: ExecutionEnvironment) -> None:
        with self._lock:
            environment.busy = False
            environment.idle_since = self._clock()
            pool = self._pools.get(environment.spec.pool_key)
            keep = (
                not self._closed
                and pool is not None
                and environment in pool.environments
                and environment.fingerprint == pool.fingerprint
                and environment.reusable
            )
            if not keep and pool is not None and environment in pool.environments:
                pool.environments.remove(environment)
        if not keep:
            environment.stop()


def _invoked_arn(
    region: str, account_id: str, function_name: str, name_or_arn: str, qualifier: str | None
) -> str:
    """The ARN the runtime sees: qualified when the caller named a version or alias."""
    explicit = qualifier
    if name_or_arn.startswith("arn:"):
        parts = name_or_arn.split(":")
        if len(parts) == 8:
            explicit = parts[7]
    elif ":" in name_or_arn:
        explicit = name_or_arn.split(":", 1)[1]
    base = _function_arn(region, account_id, function_name)
    return base + (":" + explicit if explicit else "")


def _validated_event(payload: bytes) -> bytes:
    """The event as the runtime receives it: the payload, or {} when none; JSON is required."""
    if not payload.strip():
        return b"{}"
    try:
        json.loads(payload)
    except ValueError as error:
        raise InvalidRequestContentException(
            f"Could not parse request body into json: Could not parse payload into json: {error}"
        )
    return payload


def _decoded_client_context(client_context: str | None) -> str | None:
    if not client_context:
        return None
    try:
        text = base64.b64decode(client_context, validate=True).decode("utf-8")
        json.loads(text)
    except (binascii.Error, ValueError):
        raise InvalidRequestContentException("Client context must be a valid Base64-encoded JSON object.")
    return text
