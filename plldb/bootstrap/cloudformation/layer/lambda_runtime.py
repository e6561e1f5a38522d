"""The debugger layer's runtime: every invocation is handed to the developer's machine and answered from there.

The wrapper starts this module instead of the Python runtime when the function carries a debugging
session (DEBUGGER_SESSION_ID). It acts with the function's own credentials only, and the helper stack
lets those do three things: write and read invocation items and payload objects under the function's
own identity (``aws:userid``), and invoke the dispatcher. For each invocation it writes the item, asks
the dispatcher to post the invocation to the session's developer, polls the item until the developer's
answer is stored there, and returns that answer to Lambda as the function's result or error. When no
debugger can answer, the session's fallback decides: a clear "not attached" error, or the function's
own handler run here exactly as Lambda runs it. docs/protocol.md describes the messages, items,
thresholds and the polling schedule.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_for_future
from typing import Any

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)

import plldb
from plldb import lambda_common, lambda_python, protocol
from plldb.bootstrap.cloudformation.layer import routing
from plldb.bootstrap.cloudformation.layer.answers import (
    ACKNOWLEDGED_MEANWHILE,
    ERROR_CONFIGURATION,
    ERROR_CORRUPT_RESPONSE,
    Answer,
    fix_hint,
    layer_error,
    not_attached_error,
    refused_error,
    timeout_error,
)
from plldb.bootstrap.cloudformation.layer.function_access import (
    RETRY_DELAY_SECONDS,
    FunctionAccess,
    OwnTrafficFilter,
    own_work,
)
from plldb.bootstrap.cloudformation.layer.passthrough import LAYER_ROOT, CloudHandler
from plldb.bootstrap.cloudformation.layer.runtime_client import Invocation, RuntimeApiClient, RuntimeApiError
from plldb.bootstrap.cloudformation.layer.settings import Settings, restore_function_environment

LOGGER = logging.getLogger("plldb.layer")

# Polling the invocation item: the first read comes FIRST_POLL_DELAY after the dispatcher posted, each
# wait is POLL_BACKOFF_FACTOR times longer than the one before, and no wait exceeds MAX_POLL_DELAY. A
# quick debugger is seen within a few milliseconds; one stopped at a breakpoint costs at most 2 reads/s.
FIRST_POLL_DELAY_SECONDS = 0.002
POLL_BACKOFF_FACTOR = 1.3
MAX_POLL_DELAY_SECONDS = 0.5
# While the dispatcher's answer is on its way back (it answers after posting), the developer's answer
# may already be stored: the layer reads at EARLY_READ_FRACTION of the quickest of the last
# QUICK_ANSWERS_KEPT unacknowledged answers (counted from the dispatcher invocation), then each read
# POLL_BACKOFF_FACTOR later, at most EARLY_READS times before the dispatcher has answered.
EARLY_READ_FRACTION = 0.8
EARLY_READS = 4
QUICK_ANSWERS_KEPT = 8
UNKNOWN_DEADLINE_SECONDS = 900  # Lambda always sends a deadline; this only guards a missing header

# An Invoke of the dispatcher that may have reached Lambda is never sent again: the second run would find
# the delivery posted already and refuse it, although the first run posted it to the debugger. Only
# refusals that mean Lambda did not run the dispatcher at all are retried (DISPATCH_ATTEMPTS in all).
DISPATCH_ATTEMPTS = 3
NOT_INVOKED_ERRORS = ("TooManyRequestsException",)  # Lambda throttled the Invoke: nothing ran


def _wait_finished(pending: Future[Any], seconds: float) -> bool:
    """Wait up to ``seconds`` for a dispatcher invocation; True once it has finished."""
    return bool(wait_for_future([pending], timeout=seconds).done)


def poll_delays() -> Iterator[float]:
    """The waits between reads of the invocation item (see FIRST_POLL_DELAY_SECONDS)."""
    delay = FIRST_POLL_DELAY_SECONDS
    while True:
        yield delay
        delay = min(delay * POLL_BACKOFF_FACTOR, MAX_POLL_DELAY_SECONDS)


# --- The bridge to the local debugger ---------------------------------------------------------------------
class Delivery:
    """One round of one invocation: its item's key and what is known of it."""

    def __init__(self, invocation: Invocation, caller: str, session_id: str = "") -> None:
        self.invocation = invocation
        self.caller = caller
        self.session_id = session_id
        self.delivery_id = protocol.new_delivery_id()
        self.request_id = invocation.request_id

    @property
    def key(self) -> dict[str, Any]:
        return {protocol.A_CALLER: {"S": self.caller}, protocol.A_DELIVERY_ID: {"S": self.delivery_id}}


class SessionCheck:
    """One check of an acknowledged invocation's session, run on a thread of its own."""

    def __init__(self, check: Callable[[], str | None]) -> None:
        self.reason: str | None = None  # why the session ended, once done
        self.done = threading.Event()
        threading.Thread(target=self._run, args=(check,), name="plldb-session-check", daemon=True).start()

    def _run(self, check: Callable[[], str | None]) -> None:
        try:
            with own_work():
                self.reason = check()
        except Exception as exc:  # a failed check changes nothing: the next one, or the deadline, decides
            LOGGER.warning("plldb: could not check the debugging session (%s); still waiting", exc)
        finally:
            self.done.set()


class DebuggerBridge:
    """Hands invocations to the developer through the dispatcher and waits on the function's own item."""

    def __init__(
        self,
        settings: Settings,
        access: FunctionAccess,
        cloud_handler: CloudHandler,
        sleep: Callable[[float], None] = time.sleep,
        *,
        executor: Executor | None = None,
        clock: Callable[[], float] | None = None,
        wait: Callable[[Future[Any], float], bool] | None = None,
        router: routing.Router | None = None,
    ) -> None:
        """``executor`` runs the dispatcher's invocations, ``clock`` is monotonic seconds and ``wait`` waits
        up to some seconds for a dispatcher invocation to finish (True once it has): tests replace them."""
        self._settings = settings
        self._access = access
        self._cloud_handler = cloud_handler
        self._sleep = sleep
        self._clock = clock or time.monotonic
        self._wait = wait or _wait_finished
        self._router = (
            router if router is not None or not settings.routes else routing.Router(settings.routes)
        )
        self._follow_up: Callable[[], None] | None = None  # observe: the delivery, after the answer
        self.reads = 0  # item reads of the last invocation (reported in the log)
        # Seconds from invoking the dispatcher to reading a quick (unacknowledged) answer, latest last.
        self.quick_answers: deque[float] = deque(maxlen=QUICK_ANSWERS_KEPT)
        # Dispatcher invocations run here, so the item can be read while one is still returning; an answer
        # read first leaves its invocation to finish on its own. Four threads: even when the dispatcher is
        # slow, the invocations answered early before this one leave a thread free for its own.
        self._dispatching = executor or ThreadPoolExecutor(max_workers=4, thread_name_prefix="plldb-dispatch")

    def warm_up(self) -> None:
        """Learn the function's identity and create the clients before the first invocation."""
        try:
            self._access.identify()
            for service in ("dynamodb", "lambda"):
                self._access.client(service)
        except (BotoCoreError, ClientError) as exc:
            LOGGER.warning("plldb: could not reach AWS yet (%s); will retry per invocation", exc)

    # The invocation path ---------------------------------------------------------------------------------
    def answer(self, invocation: Invocation) -> Answer:
        session_id = self._settings.session_id
        if self._router is not None:
            route = self._router.choose(invocation.body)
            if route is None:
                return self._cloud_handler.run(invocation)  # no session takes it: the deployed code
            if route.observe:
                return self._observe(invocation, route.session_id)
            session_id = route.session_id
        self.reads = 0
        delivery = Delivery(invocation, self._access.identify(), session_id)
        payload = self._payload(delivery)
        self._record(delivery, payload)
        dispatched = self._clock()
        pending = self._dispatching.submit(self._dispatch_on_pool, delivery, "deliver", payload)
        early = self._answer_while_dispatching(delivery, pending, dispatched)
        if early is not None:
            return early  # the dispatcher's invocation finishes on its own; its verdict no longer matters
        try:
            verdict = pending.result()
        except ReadTimeoutError:
            # The dispatcher's answer was lost: it may have posted the invocation. An answer the debugger
            # already stored is the result; otherwise the item is closed, so a later answer is refused
            # (RequestClosed) instead of being taken for delivered, and this invocation fails.
            answered = self._give_up(
                delivery, protocol.RESPONSE_CODE_UNAVAILABLE, "the helper stack's dispatcher did not answer"
            )
            if answered is not None:
                return answered
            raise
        status = verdict.get("status")
        if status == "posted":
            LOGGER.info(
                "plldb: invocation sent to the local debugger (session %s)",
                lambda_common.redact(delivery.session_id),
            )
            return self._await_answer(delivery, dispatched)
        reason = str(verdict.get("reason") or "the helper stack gave no reason")
        answered = self._give_up(delivery, protocol.RESPONSE_CODE_UNAVAILABLE, reason)
        if answered is not None:
            return answered
        if status == "absent":
            return self._without_debugger(invocation, reason)
        return Answer.failure(refused_error(reason, invocation.request_id))

    def _observe(self, invocation: Invocation, session_id: str) -> Answer:
        """Observe mode: the deployed handler answers; the delivery follows once Lambda has the answer."""
        started = time.monotonic()
        answer = self._cloud_handler.run(invocation)
        duration_ms = (time.monotonic() - started) * 1000.0
        self._follow_up = lambda: self._hand_over_observed(invocation, session_id, answer, duration_ms)
        return answer

    def follow_up(self, deadline_ms: int | None = None) -> None:
        """After the answer went to the Runtime API: what observe mode still owes its session, if any.

        Lambda keeps the environment running until the runtime asks for the next invocation (the
        Runtime API's ``/next``), and the function's timeout still counts, so the hand-over runs on a
        dispatch thread (as the layer's own work: its SDK records stay out of the log) and is waited
        for only until ``DEADLINE_MARGIN_MS`` before the invocation's deadline; if it takes longer it
        finishes beside the next invocation. A failure costs one log line, never the invocation, which
        is already answered.
        """
        follow_up, self._follow_up = self._follow_up, None
        if follow_up is None:
            return
        pending = self._dispatching.submit(self._own_follow_up, follow_up)
        remaining = (deadline_ms - protocol.DEADLINE_MARGIN_MS) / 1000.0 - time.time() if deadline_ms else 0.0
        if not self._wait(pending, max(0.0, remaining)):
            LOGGER.info(
                "plldb: the observed invocation is still being handed over; it goes on beside the next"
            )

    @staticmethod
    def _own_follow_up(follow_up: Callable[[], None]) -> None:
        with own_work():
            try:
                follow_up()
            except Exception as exc:
                LOGGER.warning("plldb: the observed invocation could not be handed to the debugger (%s)", exc)

    def _hand_over_observed(
        self, invocation: Invocation, session_id: str, answer: Answer, duration_ms: float
    ) -> None:
        delivery = Delivery(invocation, self._access.identify(), session_id)
        payload = self._payload(delivery, routing.observed_outcome(answer.body, answer.error, duration_ms))
        self._record(delivery, payload)
        verdict = self._dispatch(delivery, "deliver", payload)
        if verdict.get("status") != "posted":
            LOGGER.info(
                "plldb: the observed invocation was not posted to session %s (%s)",
                lambda_common.redact(session_id),
                verdict.get("reason") or verdict.get("status"),
            )

    def _answer_while_dispatching(
        self, delivery: Delivery, pending: Future[dict[str, Any]], dispatched: float
    ) -> Answer | None:
        """The developer's answer when it is stored before the dispatcher's invocation returns, else None.

        Reads start at EARLY_READ_FRACTION of the quickest recent answer, never before one was seen, and
        stop after EARLY_READS. Only an answer (200 or 500) ends the wait here: anything else is left to
        the dispatcher's verdict.
        """
        if not self.quick_answers:
            return None
        after = min(self.quick_answers) * EARLY_READ_FRACTION
        for _ in range(EARLY_READS):
            if self._wait(pending, max(0.0, dispatched + after - self._clock())):
                return None
            item = self._read(delivery)
            if item is not None and item.get(protocol.A_RESPONSE_CODE, {}).get("N") in (
                str(protocol.RESPONSE_CODE_OK),
                str(protocol.RESPONSE_CODE_ERROR),
            ):
                if protocol.A_ACKED_AT not in item:
                    self.quick_answers.append(self._clock() - dispatched)
                return self._answer_from_item(delivery, item)
            after *= POLL_BACKOFF_FACTOR
        return None

    def _without_debugger(self, invocation: Invocation, reason: str) -> Answer:
        if self._settings.fallback == protocol.FALLBACK_PASSTHROUGH:
            LOGGER.info(
                "plldb: no debugger (%s); running the function's own handler (fallback passthrough)", reason
            )
            return self._cloud_handler.run(invocation)
        return Answer.failure(not_attached_error(reason, invocation.request_id))

    def _payload(self, delivery: Delivery, observed: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """What the dispatcher turns into the `invoke` message; a large event goes as an S3 object."""
        invocation = delivery.invocation
        environ = os.environ
        payload: dict[str, Any] = {
            "requestId": invocation.request_id,
            "function": {"version": self._settings.function_version},
            "handler": self._settings.handler,
            "context": {
                "functionName": environ.get("AWS_LAMBDA_FUNCTION_NAME"),
                "functionVersion": environ.get("AWS_LAMBDA_FUNCTION_VERSION"),
                "invokedFunctionArn": invocation.invoked_function_arn,
                "memoryLimitInMB": environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE"),
                "logGroupName": environ.get("AWS_LAMBDA_LOG_GROUP_NAME"),
                "logStreamName": environ.get("AWS_LAMBDA_LOG_STREAM_NAME"),
                "deadlineMs": invocation.deadline_ms,
                "traceId": invocation.trace_id,
                "clientContext": invocation.client_context,
                "cognitoIdentity": invocation.cognito_identity,
                "tenantId": invocation.tenant_id,
            },
            "environment": protocol.without_credentials(environ),
            "credentials": self._access.credentials(),
        }
        if observed is not None:
            payload["observed"] = dict(observed)
        try:
            payload["event"] = invocation.body.decode("utf-8")
            if protocol.message_size(payload) <= protocol.INLINE_MESSAGE_LIMIT:
                return payload
            del payload["event"]
        except UnicodeDecodeError:
            pass
        s3 = self._access.client("s3")
        key = protocol.event_object_key(delivery.caller, delivery.delivery_id)
        self._access.call(
            lambda: s3.put_object(Bucket=self._settings.payload_bucket, Key=key, Body=invocation.body)
        )
        payload.update(
            eventObject=True, eventSha256=protocol.sha256_hex(invocation.body), eventSize=len(invocation.body)
        )
        return payload

    def _record(self, delivery: Delivery, payload: Mapping[str, Any]) -> None:
        """The invocation item, under this function's own identity; its digest binds the payload."""
        dynamodb = self._access.client("dynamodb")
        item = {
            **delivery.key,
            protocol.A_SESSION_ID: {"S": delivery.session_id},
            protocol.A_REQUEST_ID: {"S": delivery.request_id},
            protocol.A_FUNCTION_NAME: {"S": self._settings.function_name},
            protocol.A_PAYLOAD_SHA256: {"S": protocol.payload_digest(payload)},
            protocol.A_TTL: {"N": str(int(time.time()) + protocol.INVOCATION_ITEM_TTL_SECONDS)},
        }
        try:
            self._access.call(
                lambda: dynamodb.put_item(
                    TableName=self._settings.invocations_table,
                    Item=item,
                    ConditionExpression="attribute_not_exists(#caller)",
                    ExpressionAttributeNames={"#caller": protocol.A_CALLER},
                )
            )
        except ClientError as exc:
            # The key holds a fresh random delivery id under this function's own identity: an item already
            # there is this one, written by an earlier attempt the SDK sent again when its answer was lost.
            if not lambda_common.is_condition_failure(exc):
                raise

    def _dispatch_on_pool(
        self, delivery: Delivery, action: str, payload: Mapping[str, Any]
    ) -> dict[str, Any]:
        """_dispatch on a thread of the dispatch pool, whose SDK records are the layer's own (see own_work)."""
        with own_work():
            return self._dispatch(delivery, action, payload)

    def _dispatch(
        self, delivery: Delivery, action: str, payload: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        request: dict[str, Any] = {
            "action": action,
            "caller": delivery.caller,
            "deliveryId": delivery.delivery_id,
        }
        if payload is not None:
            request["payload"] = payload
            request["sessionId"] = delivery.session_id  # the dispatcher checks the item names it
        response = self._invoke_dispatcher(json.dumps(request, separators=(",", ":")).encode("utf-8"))
        body = response["Payload"].read()
        if response.get("FunctionError"):
            return {
                "status": "absent",
                "reason": "the helper stack's dispatcher failed ({})".format(
                    body[:300].decode("utf-8", "replace")
                ),
            }
        try:
            verdict = json.loads(body or b"null")
        except ValueError:
            verdict = None
        return (
            verdict
            if isinstance(verdict, dict)
            else {"status": "absent", "reason": "the dispatcher's answer is unreadable"}
        )

    def _invoke_dispatcher(self, body: bytes) -> Any:
        """One run of the dispatcher; sent again only when Lambda surely did not run it (see DISPATCHER_CONFIG)."""
        client = self._access.client("lambda")
        attempt = 1
        while True:
            try:
                return self._access.call(
                    lambda: client.invoke(
                        FunctionName=self._settings.dispatcher_arn,
                        InvocationType="RequestResponse",
                        Payload=body,
                    )
                )
            except (EndpointConnectionError, ConnectTimeoutError):
                if attempt >= DISPATCH_ATTEMPTS:
                    raise
            except ClientError as exc:
                if lambda_common.error_code(exc) not in NOT_INVOKED_ERRORS or attempt >= DISPATCH_ATTEMPTS:
                    raise
            self._sleep(RETRY_DELAY_SECONDS * attempt)
            attempt += 1

    # One loop with a branch per state of the item, in the order docs/protocol.md gives them.
    def _await_answer(self, delivery: Delivery, dispatched: float | None = None) -> Answer:  # noqa: PLR0912
        """Poll the item until an answer, the ack timeout, the session's end or the deadline.

        Once acknowledged, the session is checked every SESSION_CHECK_SECONDS: a debugger that died while
        running the invocation closes its session (after the disconnect grace period), and the caller
        should not wait for the deadline then. The check asks the dispatcher, whose answer can take
        seconds (a cold start), so it runs beside this loop: the deadline is kept whatever it takes.
        """
        invocation = delivery.invocation
        started = self._clock()
        ack_deadline = started + protocol.ACK_TIMEOUT_SECONDS
        deadline_ms = invocation.deadline_ms or int((time.time() + UNKNOWN_DEADLINE_SECONDS) * 1000)
        acked = False
        next_session_check = started + protocol.SESSION_CHECK_SECONDS
        check: SessionCheck | None = None
        for delay in poll_delays():
            wait = min(delay, (deadline_ms - time.time() * 1000 - protocol.DEADLINE_MARGIN_MS) / 1000.0)
            if not acked:
                wait = min(wait, ack_deadline - self._clock())
            if wait > 0:
                self._sleep(wait)
            if deadline_ms - time.time() * 1000 <= protocol.DEADLINE_MARGIN_MS:
                answered = self._give_up(
                    delivery, protocol.RESPONSE_CODE_TIMEOUT, "the function's deadline came"
                )
                if answered is not None:
                    return answered
                timeout = round((deadline_ms - invocation.received_at_ms) / 1000.0)
                return Answer.failure(timeout_error(timeout, invocation.request_id))
            item = self._read(delivery)
            if item is None:
                return Answer.failure(layer_error("its invocation item disappeared", invocation.request_id))
            if protocol.A_RESPONSE_CODE in item:
                LOGGER.info(
                    "plldb: answered with %s after %d ms (%d reads)",
                    item[protocol.A_RESPONSE_CODE].get("N"),
                    (self._clock() - started) * 1000,
                    self.reads,
                )
                if dispatched is not None and protocol.A_ACKED_AT not in item:
                    self.quick_answers.append(self._clock() - dispatched)
                return self._answer_from_item(delivery, item)
            if not acked and protocol.A_ACKED_AT in item:
                acked = True
            if check is not None and check.done.is_set():
                if check.reason is not None:
                    return self._abandon_acknowledged(delivery, check.reason)
                check = None
            if acked and check is None and self._clock() >= next_session_check:
                next_session_check = self._clock() + protocol.SESSION_CHECK_SECONDS
                check = SessionCheck(lambda: self._session_end_reason(delivery))
            if not acked and self._clock() >= ack_deadline:
                reason = f"the debugger did not acknowledge the invocation within {protocol.ACK_TIMEOUT_SECONDS:g} s"
                answered = self._give_up(
                    delivery, protocol.RESPONSE_CODE_UNAVAILABLE, reason, unless_acknowledged=True
                )
                if answered is ACKNOWLEDGED_MEANWHILE:
                    acked = True  # the ack landed after the last read: the debugger has it, keep waiting
                    continue
                if answered is not None:
                    return answered
                return self._without_debugger(invocation, reason)
        raise AssertionError("unreachable")

    def _session_end_reason(self, delivery: Delivery) -> str | None:
        """Why the session can no longer answer an acknowledged invocation, or None while it can.

        A failed check changes nothing; the next check, or the deadline, still ends the wait.
        """
        try:
            verdict = self._dispatch(delivery, "status")
        except (BotoCoreError, ClientError) as exc:
            LOGGER.warning("plldb: could not check the debugging session (%s); still waiting", exc)
            return None
        if verdict.get("status") in ("absent", "refused"):
            return str(verdict.get("reason") or "its debugging session has ended")
        return None

    def _abandon_acknowledged(self, delivery: Delivery, reason: str) -> Answer:
        """Stop waiting for a debugger whose session ended after it acknowledged the invocation.

        The answer is PlldbNotAttached whatever the fallback: the handler has already run, at least in
        part, on the developer's machine, and running it again here could repeat its side effects.
        """
        answered = self._give_up(delivery, protocol.RESPONSE_CODE_UNAVAILABLE, reason)
        if answered is not None:
            return answered
        LOGGER.info("plldb: the debugging session ended before the debugger answered (%s)", reason)
        return Answer.failure(not_attached_error(reason, delivery.request_id))

    def _read(self, delivery: Delivery) -> dict[str, Any] | None:
        dynamodb = self._access.client("dynamodb")
        self.reads += 1
        return self._access.call(  # type: ignore[no-any-return]
            lambda: dynamodb.get_item(
                TableName=self._settings.invocations_table,
                Key=delivery.key,
                ConsistentRead=True,
                ProjectionExpression="#caller, #code, #response, #object, #sha, #size, #error, #acked, #reason",
                ExpressionAttributeNames={
                    "#caller": protocol.A_CALLER,
                    "#code": protocol.A_RESPONSE_CODE,
                    "#response": protocol.A_RESPONSE,
                    "#object": protocol.A_RESPONSE_OBJECT,
                    "#sha": protocol.A_RESPONSE_SHA256,
                    "#size": protocol.A_RESPONSE_SIZE,
                    "#error": protocol.A_ERROR,
                    "#acked": protocol.A_ACKED_AT,
                    "#reason": protocol.A_REASON,
                },
            )
        ).get("Item")

    def _give_up(
        self, delivery: Delivery, code: int, reason: str, unless_acknowledged: bool = False
    ) -> Answer | None:
        """Close the item with 503/504 so any later answer is refused; the answer instead if one just landed.

        ``unless_acknowledged`` (the ack timeout): an ack stored since the last read wins, and
        ACKNOWLEDGED_MEANWHILE says so, since the debugger may already be running the invocation: the
        layer must neither run it again (passthrough) nor refuse the debugger's answer.
        """
        dynamodb = self._access.client("dynamodb")
        condition = "attribute_exists(#caller) AND attribute_not_exists(#code)"
        names = {
            "#caller": protocol.A_CALLER,
            "#code": protocol.A_RESPONSE_CODE,
            "#reason": protocol.A_REASON,
        }
        if unless_acknowledged:
            condition += " AND attribute_not_exists(#acked)"
            names["#acked"] = protocol.A_ACKED_AT
        try:
            self._access.call(
                lambda: dynamodb.update_item(
                    TableName=self._settings.invocations_table,
                    Key=delivery.key,
                    UpdateExpression="SET #code = :code, #reason = :reason",
                    ConditionExpression=condition,
                    ExpressionAttributeNames=names,
                    ExpressionAttributeValues={":code": {"N": str(code)}, ":reason": {"S": reason[:500]}},
                )
            )
        except ClientError as exc:
            if not lambda_common.is_condition_failure(exc):
                raise
            item = self._read(delivery)
            found = (
                int(item[protocol.A_RESPONSE_CODE]["N"])
                if item and protocol.A_RESPONSE_CODE in item
                else None
            )
            if found in (protocol.RESPONSE_CODE_UNAVAILABLE, protocol.RESPONSE_CODE_TIMEOUT):
                # Only the layer closes its item: an earlier attempt of this very update was applied (the
                # SDK sent it again when its answer was lost), so the close stands.
                return None
            if item is not None and found is not None:
                return self._answer_from_item(delivery, item)
            if item is not None and unless_acknowledged and protocol.A_ACKED_AT in item:
                return ACKNOWLEDGED_MEANWHILE
        return None

    def _answer_from_item(self, delivery: Delivery, item: Mapping[str, Any]) -> Answer:
        request_id = delivery.request_id
        code = int(item[protocol.A_RESPONSE_CODE]["N"])
        if code == protocol.RESPONSE_CODE_OK:
            if protocol.A_RESPONSE in item:
                return Answer.result(item[protocol.A_RESPONSE]["S"].encode("utf-8"))
            if protocol.A_RESPONSE_OBJECT in item and protocol.A_RESPONSE_SHA256 in item:
                return self._answer_from_object(delivery, item)
            return Answer.failure(layer_error("the debugger's answer has no payload", request_id))
        if code == protocol.RESPONSE_CODE_ERROR:
            return Answer.failure(_local_error(item.get(protocol.A_ERROR, {}).get("S"), request_id))
        reason = item.get(protocol.A_REASON, {}).get("S") or "the debugger did not answer"
        if code == protocol.RESPONSE_CODE_TIMEOUT:
            timeout = round((delivery.invocation.deadline_ms - delivery.invocation.received_at_ms) / 1000.0)
            return Answer.failure(timeout_error(timeout, request_id))
        if code == protocol.RESPONSE_CODE_UNAVAILABLE:
            return Answer.failure(not_attached_error(reason, request_id))
        return Answer.failure(layer_error(f"unknown ResponseCode {code}", request_id))

    def _answer_from_object(self, delivery: Delivery, item: Mapping[str, Any]) -> Answer:
        digest = item[protocol.A_RESPONSE_SHA256]["S"]
        s3 = self._access.client("s3")
        key = protocol.response_object_key(delivery.caller, delivery.delivery_id)
        try:
            stored = self._access.call(lambda: s3.get_object(Bucket=self._settings.payload_bucket, Key=key))
            body = stored["Body"].read()
        except ClientError as exc:
            body = None
            LOGGER.warning("plldb: the debugger's large answer could not be read (%s)", exc)
        if body is None or protocol.sha256_hex(body) != digest:
            problem = "could not be read" if body is None else "does not match its SHA-256 digest"
            message = f"The debugger's response {problem}."
            return Answer.failure(
                lambda_python.make_error(message, ERROR_CORRUPT_RESPONSE, [], delivery.request_id)
            )
        return Answer.result(body)


def _local_error(error_json: str | None, request_id: str) -> dict[str, Any]:
    """The local exception as awslambdaric reports it, with this invocation's request id."""
    try:
        error = json.loads(error_json or "")
    except ValueError:
        error = None
    if not isinstance(error, dict):
        return layer_error("the debugger's error answer is not a JSON object", request_id)
    trace = error.get("stackTrace")
    return lambda_python.make_error(
        error.get("errorMessage"),
        error.get("errorType"),
        trace if isinstance(trace, list) else [],
        request_id,
    )


# --- The runtime loop -----------------------------------------------------------------------------------
class CurrentRequest:
    """The invocation being handled, for the request id in log lines."""

    def __init__(self) -> None:
        self.request_id = ""
        self.tenant_id: str | None = None

    def get(self) -> tuple[str, str | None]:
        return self.request_id, self.tenant_id


def deliver(runtime: RuntimeApiClient, invocation: Invocation, answer: Answer) -> None:
    """Hand the answer to the Runtime API; the error is logged as the Python runtime logs it."""
    if answer.error is None and answer.body is not None:
        try:
            runtime.post_response(invocation.request_id, answer.body, answer.content_type)
            return
        except RuntimeApiError as exc:
            answer = Answer.failure(layer_error(str(exc), invocation.request_id))
    error = answer.error or layer_error("no answer", invocation.request_id)
    lambda_python.log_error(error)
    try:
        runtime.post_error(invocation.request_id, error)
    except RuntimeApiError as exc:
        LOGGER.error("plldb: the Runtime API refused the error report: %s", exc)


def serve(runtime: RuntimeApiClient, bridge: DebuggerBridge, current: CurrentRequest) -> None:
    """The runtime loop: one invocation at a time, for the life of the environment."""
    while True:
        invocation = runtime.next_invocation()
        current.request_id, current.tenant_id = invocation.request_id, invocation.tenant_id
        if invocation.trace_id is not None:
            os.environ["_X_AMZN_TRACE_ID"] = invocation.trace_id
        else:
            os.environ.pop("_X_AMZN_TRACE_ID", None)
        try:
            with own_work():
                answer = bridge.answer(invocation)
        except Exception as exc:
            # One failed invocation (throttling, a network error, ...) must not end the environment.
            answer = Answer.failure(layer_error(f"{type(exc).__name__}: {exc}", invocation.request_id))
        deliver(runtime, invocation, answer)
        bridge.follow_up(invocation.deadline_ms)


def _hide_layer_from_handler_imports() -> None:
    """Take the layer's package off the import path and out of sys.modules.

    A function may have its own module named ``plldb``; it must import that one, not the layer's.
    The layer's modules stay alive through the references this code already holds.
    """
    sys.path[:] = [entry for entry in sys.path if entry not in ("", LAYER_ROOT)]
    for name in list(sys.modules):
        if name == "plldb" or name.startswith("plldb."):
            del sys.modules[name]


def main(original_command: list[str]) -> None:
    """Started by the wrapper with the runtime's original command line (kept to hand over to)."""
    settings = Settings(os.environ)
    if not settings.session_id and not settings.sessions:
        os.execvp(original_command[0], original_command)  # noqa: S606 - the runtime's own command line
    runtime = RuntimeApiClient(os.environ["AWS_LAMBDA_RUNTIME_API"])
    current = CurrentRequest()
    lambda_python.setup_logging(current.get)
    for handler in logging.getLogger().handlers:
        handler.addFilter(OwnTrafficFilter())
    LOGGER.setLevel(logging.getLogger().level if os.environ.get("AWS_LAMBDA_LOG_LEVEL") else logging.INFO)
    restore_function_environment(os.environ)
    _hide_layer_from_handler_imports()
    if settings.problems:
        message = "plldb's debugger layer cannot start: {}. {}".format(
            "; ".join(settings.problems), fix_hint()
        )
        error = lambda_python.make_error(message, ERROR_CONFIGURATION, [])
        lambda_python.log_error(error)
        runtime.post_init_error(error)
        sys.exit(1)
    LOGGER.info(
        "plldb: debugger layer %s (%s) active for session %s (function %s)",
        plldb.__version__,
        LAYER_ROOT,
        ", ".join(lambda_common.redact(r.session_id) for r in settings.routes)
        or lambda_common.redact(settings.session_id),
        settings.function_name,
    )
    with own_work():
        bridge = DebuggerBridge(settings, FunctionAccess(settings), CloudHandler(settings.handler))
        bridge.warm_up()
    serve(runtime, bridge, current)
