"""The instrumentation manager: attaches the debugger layer to a stack's functions and restores them.

Actions (event ``{"action": ...}``):

- ``instrument`` {sessionId}: from $connect. Takes the stack's lock for the session (one active
  session per stack), then for every ``AWS::Lambda::Function`` of the stack and its nested stacks
  that matches the session's patterns: saves the original configuration in the instrumentation
  table *before* the first change, attaches the stack's InstrumentedFunctionPolicy to the
  function's execution role (reference-counted), adds the layer, the session's variables and the
  session's timeout. Progress goes to the session's connection.
- ``restore`` {sessionId}: from a ``detach`` message. Closes the session and restores its stack.
- ``restore_if_abandoned`` {sessionId, connectionId, notBefore}: from $disconnect. Waits until
  ``notBefore``; restores only if the session is still on that connection (no reconnect).
- ``restore_stack`` {stackName}: from ``plldb detach --stack-name`` or ``bootstrap destroy --force``,
  on any machine: closes the stack's sessions and restores every function recorded for it.
- ``status``: active sessions and instrumented functions, for ``plldb bootstrap status/destroy``.

Every step is idempotent and the saved original is never an instrumented configuration, so running
an action twice, or restoring after a crash at any point, puts back exactly what was deployed.
"""

from __future__ import annotations

import datetime
import fnmatch
import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Tuple

from botocore.exceptions import ClientError

from plldb import protocol
from plldb.bootstrap.cloudformation.handlers.common import (
    Resources,
    configure_logging,
    error_code,
    from_item,
    is_condition_failure,
    log,
    now_seconds,
    redact,
    to_attribute_values,
)

LOGGER = configure_logging("plldb.manager")
RESOURCES = Resources().warm_up("dynamodb", "lambda_client", "cloudformation", "iam", "connections")

# --- Instrumentation table (key ResourceArn) -------------------------------------------------------------
A_RESOURCE_ARN = "ResourceArn"
A_KIND = "Kind"
A_LOGICAL_ID = "LogicalId"
A_ROLE = "Role"
A_ORIGINAL = "OriginalConfiguration"  # JSON text {"environment": {...}|null, "layers": [...], "timeout": n}
A_DERIVED = "Derived"  # the original was reconstructed from an instrumented configuration
A_SAVED_AT = "SavedAt"
A_USERS = "Users"  # role records: the instrumented functions (ARNs) using the policy through this role
A_PREEXISTING = "PreexistingAttachment"  # role records: the policy was attached before plldb touched it
KIND_FUNCTION = "function"
KIND_ROLE = "role"
KIND_STACK_LOCK = "stack-lock"

MAX_LAYERS = 5  # Lambda's limit on layers per function
MAX_TIMEOUT_SECONDS = 900
DEFAULT_FUNCTION_TIMEOUT = 900
MAX_PARALLEL_FUNCTIONS = 16  # at most CONTROL_CLIENT_CONFIG's connection pool
MAX_NESTING_DEPTH = 10
UPDATE_WAIT_SECONDS = 120.0
CONFLICT_RETRIES = 10
MAX_GRACE_WAIT_SECONDS = 600.0

STATUS_OK = "ok"
STATUS_SKIPPED = "skipped"
STATUS_FAILED = "failed"

PHASE_INSTRUMENT = "instrument"
PHASE_RESTORE = "restore"

_role_locks: Dict[str, threading.Lock] = {}
_role_locks_guard = threading.Lock()


class ManagerError(Exception):
    """A failure the caller should read: returned to synchronous callers as the function error message."""


class ChangedMeanwhile(ManagerError):
    """The function was updated (a deploy) between plldb's read and its update: the read is stale."""


class StackNotFound(ManagerError):
    pass


@dataclass
class StackFunction:
    function_name: str
    logical_id: str
    path: str  # logical ids from the attached stack down, e.g. "Api/HelloFunction" in a nested stack


@dataclass
class FunctionResult:
    function_name: str
    logical_id: str
    status: str
    message: str

    def as_dict(self) -> Dict[str, str]:
        return {
            "functionName": self.function_name,
            "logicalId": self.logical_id,
            "status": self.status,
            "message": self.message,
        }


@dataclass
class Original:
    """What the function looked like before plldb: exactly the fields plldb changes."""

    environment: Optional[Dict[str, str]]
    layers: List[str]
    timeout: int
    derived: bool = False

    def to_json(self) -> str:
        return json.dumps(
            {"environment": self.environment, "layers": self.layers, "timeout": self.timeout},
            sort_keys=True,
            separators=(",", ":"),
        )

    @staticmethod
    def from_json(text: str, derived: bool = False) -> Original:
        value = json.loads(text)
        return Original(
            environment=value.get("environment"),
            layers=list(value.get("layers") or []),
            timeout=int(value["timeout"]),
            derived=derived,
        )


@dataclass
class Instrumented:
    """A function this invocation changed, with the original it can put back without the table."""

    function: StackFunction
    function_arn: str
    role_arn: str
    original: Original


@dataclass
class InstrumentRun:
    results: List[FunctionResult] = field(default_factory=list)
    changed: List[Instrumented] = field(default_factory=list)


# --- Entry point -----------------------------------------------------------------------------------------
def handler(event: Dict[str, Any], context: Any) -> Dict[str, Any]:
    return handle(event, RESOURCES)


def handle(event: Mapping[str, Any], resources: Resources) -> Dict[str, Any]:
    action = event.get("action")
    log(LOGGER, logging.INFO, "action", action=action, session=redact(event.get("sessionId")))
    if action == "instrument":
        return instrument_session(resources, _required(event, "sessionId"))
    if action == "restore":
        return restore_session(resources, _required(event, "sessionId"))
    if action == "restore_if_abandoned":
        return restore_if_abandoned(
            resources,
            _required(event, "sessionId"),
            _required(event, "connectionId"),
            float(event.get("notBefore") or 0),
        )
    if action == "restore_stack":
        return restore_stack(resources, _required(event, "stackName"))
    if action == "status":
        return status(resources)
    raise ManagerError("unknown action %r" % (action,))


def _required(event: Mapping[str, Any], name: str) -> str:
    value = event.get(name)
    if not isinstance(value, str) or not value:
        raise ManagerError("the %r action needs a non-empty string %r" % (event.get("action"), name))
    return value


# --- Progress reporting ----------------------------------------------------------------------------------
class Reporter:
    """Progress messages to a session's current connection; silent once the client is gone."""

    FIRST_POST_RETRIES = 5  # the connection may still be completing $connect when instrumenting starts

    def __init__(
        self, resources: Resources, session_id: str, phase: str, connection_id: Optional[str]
    ) -> None:
        self.resources = resources
        self.session_id = session_id
        self.phase = phase
        self.connection_id = connection_id
        self.enabled = bool(connection_id)
        self._delivered = False
        self._lock = threading.Lock()

    def progress(self, status: str, text: str, function: Optional[str] = None, **extra: Any) -> None:
        self.send(protocol.progress_message(self.phase, status, text, function, **extra))

    def function(self, result: FunctionResult) -> None:
        self.progress(result.status, result.message, result.function_name, logicalId=result.logical_id)

    def done(self, results: Iterable[FunctionResult], text: str, **extra: Any) -> None:
        self.progress("done", text, functions=[r.as_dict() for r in results], **extra)

    def send(self, message: Mapping[str, Any]) -> None:
        with self._lock:
            if not self.enabled or not self.connection_id:
                return
            try:
                for attempt in range(self.FIRST_POST_RETRIES + 1):
                    if self.resources.post(self.connection_id, message):
                        self._delivered = True
                        return
                    fresh = self._current_connection()
                    if fresh and fresh != self.connection_id:
                        self.connection_id = fresh
                        continue
                    if self._delivered or attempt == self.FIRST_POST_RETRIES:
                        break
                    time.sleep(0.2)
            except Exception as exc:
                log(LOGGER, logging.WARNING, "progress not delivered", code=error_code(exc), error=str(exc))
            self.enabled = False

    def _current_connection(self) -> Optional[str]:
        session = self.resources.get_session(self.session_id)
        if not session or session.get(protocol.A_STATUS) == protocol.STATUS_PENDING:
            return None
        value = session.get(protocol.A_CONNECTION_ID)
        return str(value) if value else None


# --- instrument --------------------------------------------------------------------------------------------
def instrument_session(resources: Resources, session_id: str) -> Dict[str, Any]:
    session = resources.get_session(session_id)
    if session is None or session.get(protocol.A_STATUS) != protocol.STATUS_ACTIVE:
        state = "missing" if session is None else session.get(protocol.A_STATUS)
        log(
            LOGGER,
            logging.INFO,
            "not instrumenting: session is not active",
            session=redact(session_id),
            state=state,
        )
        return {"action": "instrument", "functions": [], "error": "the session is not active"}
    stack_name = str(session.get(protocol.A_STACK_NAME) or "")
    reporter = Reporter(resources, session_id, PHASE_INSTRUMENT, session.get(protocol.A_CONNECTION_ID))

    def refuse(text: str) -> Dict[str, Any]:
        log(LOGGER, logging.INFO, "instrumentation refused", stack=stack_name, reason=text)
        reporter.progress(STATUS_FAILED, text)
        reporter.done([], text, error=text)
        return {"action": "instrument", "functions": [], "error": text}

    if not stack_name:
        return refuse("The session names no stack.")
    if resources.helper_stack_name and stack_name == resources.helper_stack_name:
        return refuse(
            "Stack %r is the plldb helper stack itself; it cannot be debugged with plldb." % stack_name
        )
    holder = acquire_stack_lock(resources, stack_name, session)
    if holder is not None:
        return refuse(
            "Stack %r already has an active plldb session, attached by %s since %s. Detach it first "
            "('plldb detach --stack-name %s') or attach with --take-over."
            % (
                stack_name,
                holder.get(protocol.A_OWNER) or "someone",
                _when(holder.get(protocol.A_CREATED_AT)),
                stack_name,
            )
        )
    try:
        functions = list_stack_functions(resources, stack_name)
    except StackNotFound as exc:
        release_stack_lock(resources, stack_name, session_id)
        return refuse(str(exc))
    patterns = _patterns(session.get(protocol.A_FUNCTION_PATTERNS))
    selected = [f for f in functions if matches(f, patterns)]
    excluded = [
        FunctionResult(f.function_name, f.logical_id, STATUS_SKIPPED, "excluded by the function filter")
        for f in functions
        if f not in selected
    ]
    if not selected:
        text = (
            "Stack %r has no Lambda functions." % stack_name
            if not functions
            else "No function of stack %r matches %s." % (stack_name, ", ".join(patterns))
        )
        reporter.progress(STATUS_FAILED, text)
        reporter.done(excluded, text, error=text)
        return {"action": "instrument", "functions": [r.as_dict() for r in excluded], "error": text}
    timeout = _session_timeout(session)
    reporter.progress(
        "started",
        "Instrumenting %d function%s of stack %s"
        % (len(selected), "" if len(selected) == 1 else "s", stack_name),
        total=len(selected),
    )
    run = InstrumentRun()
    run_lock = threading.Lock()

    def work(function: StackFunction) -> None:
        result, changed = instrument_function(resources, function, stack_name, session, timeout)
        with run_lock:
            run.results.append(result)
            if changed is not None:
                run.changed.append(changed)
        reporter.function(result)

    _parallel(work, selected)
    fresh = resources.get_session(session_id)
    if fresh is None or fresh.get(protocol.A_STATUS) != protocol.STATUS_ACTIVE:
        # The session ended while we worked (detach or disconnect raced us): undo what this run did.
        log(LOGGER, logging.INFO, "session ended during instrumentation; undoing", session=redact(session_id))
        _parallel(
            lambda item: put_back(resources, item.function, item.function_arn, item.role_arn, item.original),
            run.changed,
        )
        return {"action": "instrument", "functions": [], "error": "the session ended during instrumentation"}
    results = sorted(run.results, key=lambda r: r.logical_id) + excluded
    counts = {
        s: sum(1 for r in run.results if r.status == s) for s in (STATUS_OK, STATUS_SKIPPED, STATUS_FAILED)
    }
    text = "%d instrumented, %d skipped, %d failed" % (
        counts[STATUS_OK],
        counts[STATUS_SKIPPED],
        counts[STATUS_FAILED],
    )
    reporter.done(results, text)
    return {"action": "instrument", "functions": [r.as_dict() for r in results]}


def instrument_function(
    resources: Resources, function: StackFunction, stack_name: str, session: Mapping[str, Any], timeout: int
) -> Tuple[FunctionResult, Optional[Instrumented]]:
    """Instrument one function; the original is durable before the first change."""
    name = function.function_name

    def result(status: str, text: str) -> Tuple[FunctionResult, Optional[Instrumented]]:
        return FunctionResult(name, function.logical_id, status, text), None

    try:
        config = get_configuration(resources, name)
    except ClientError as exc:
        if error_code(exc) == "ResourceNotFoundException":
            return result(STATUS_FAILED, "function not found")
        return result(STATUS_FAILED, _aws_message(exc))
    if config.get("PackageType") == "Image":
        return result(STATUS_SKIPPED, "container image functions cannot use layers")
    runtime = str(config.get("Runtime") or "")
    if not runtime.startswith("python"):
        return result(STATUS_SKIPPED, "runtime %s is not Python" % (runtime or "unknown"))
    if (config.get("Environment") or {}).get("Error"):
        return result(
            STATUS_FAILED,
            "its environment variables cannot be read: %s" % config["Environment"]["Error"].get("Message"),
        )
    function_arn = _unqualified(str(config["FunctionArn"]))
    role_arn = str(config.get("Role") or "")
    try:
        # Only an instrumented function needs its old record: otherwise its configuration is the original.
        instrumented = is_instrumented(config, resources.layer_version_arn)
        record = _get_record(resources, function_arn) if instrumented else None
        original = determine_original(config, record, resources.layer_version_arn)
        if len(original.layers) >= MAX_LAYERS:
            return result(
                STATUS_FAILED,
                "it already has %d layers and Lambda allows %d, so the plldb layer cannot be added; "
                "remove a layer or leave this function out with --function"
                % (len(original.layers), MAX_LAYERS),
            )
        save_original(
            resources,
            function=function,
            function_arn=function_arn,
            role_arn=role_arn,
            stack_name=stack_name,
            session=session,
            original=original,
        )
    except ClientError as exc:
        return result(STATUS_FAILED, "could not save its original configuration: %s" % _aws_message(exc))
    changed = Instrumented(function, function_arn, role_arn, original)
    try:
        reference_role(resources, role_arn, function_arn)
        desired_env = instrumented_environment(resources, original.environment, session)
        desired_layers = [*original.layers, resources.layer_version_arn]

        def instrumented_configuration(current: Mapping[str, Any]) -> Dict[str, Any]:
            # A retry after a conflict sees what changed it: a deploy's configuration must not be
            # overwritten from (nor later restored to) the original read before it.
            if determine_original(current, record, resources.layer_version_arn) != original:
                raise ChangedMeanwhile(
                    "it was updated (a deploy?) while plldb instrumented it and is left as deployed; "
                    "attach again to include it"
                )
            return {"Environment": {"Variables": desired_env}, "Layers": desired_layers, "Timeout": timeout}

        _update_until_applied(resources, name, instrumented_configuration, known=config)
    except Exception as exc:
        LOGGER.exception(
            "instrumentation failed; putting the function back", extra={"fields": {"function": name}}
        )
        try:
            put_back(resources, function, function_arn, role_arn, original)
        except Exception:
            LOGGER.exception("could not put the function back", extra={"fields": {"function": name}})
        return result(STATUS_FAILED, _aws_message(exc))
    text = "instrumented (timeout %d s)" % timeout
    if original.derived:
        text += (
            "; it carried plldb variables without a saved original, which were removed from the saved copy"
        )
    return FunctionResult(name, function.logical_id, STATUS_OK, text), changed


def determine_original(
    config: Mapping[str, Any], record: Optional[Mapping[str, Any]], layer_version_arn: str
) -> Original:
    """The function's deployed configuration, never an instrumented one.

    If the function is instrumented already (a second instrument, a crash, a lost session), the
    saved record stays the original. If it is not instrumented, its current configuration *is* the
    original (even when an old record exists: the function was redeployed since).
    """
    if is_instrumented(config, layer_version_arn):
        if record is not None and record.get(A_ORIGINAL):
            return Original.from_json(str(record[A_ORIGINAL]), bool(record.get(A_DERIVED)))
        return strip_instrumentation(config, layer_version_arn)
    return Original(
        environment=_variables(config),
        layers=[str(layer["Arn"]) for layer in config.get("Layers") or []],
        timeout=int(config.get("Timeout") or 3),
    )


def save_original(
    resources: Resources,
    *,
    function: StackFunction,
    function_arn: str,
    role_arn: str,
    stack_name: str,
    session: Mapping[str, Any],
    original: Original,
) -> None:
    """Write the function's record before its first change (durable: survives any crash after it)."""
    item = {
        A_RESOURCE_ARN: function_arn,
        A_KIND: KIND_FUNCTION,
        protocol.A_STACK_NAME: stack_name,
        protocol.A_SESSION_ID: str(session[protocol.A_SESSION_ID]),
        protocol.A_FUNCTION_NAME: function.function_name,
        A_LOGICAL_ID: function.path,
        A_ROLE: role_arn,
        A_ORIGINAL: original.to_json(),
        A_DERIVED: original.derived,
        A_SAVED_AT: now_seconds(),
    }
    resources.dynamodb.put_item(TableName=resources.instrumentation_table, Item=to_attribute_values(item))


def instrumented_environment(
    resources: Resources, original: Optional[Mapping[str, str]], session: Mapping[str, Any]
) -> Dict[str, str]:
    """The original variables plus the session's; a function's own exec wrapper is chained, not lost."""
    env = dict(original or {})
    own_wrapper = env.get(protocol.ENV_EXEC_WRAPPER)
    env.pop(protocol.ENV_ORIGINAL_EXEC_WRAPPER, None)
    if own_wrapper and own_wrapper != protocol.LAYER_WRAPPER_PATH:
        env[protocol.ENV_ORIGINAL_EXEC_WRAPPER] = own_wrapper
    env[protocol.ENV_EXEC_WRAPPER] = protocol.LAYER_WRAPPER_PATH
    env[protocol.ENV_SESSION_ID] = str(session[protocol.A_SESSION_ID])
    env[protocol.ENV_CONNECTION_ID] = str(session.get(protocol.A_CONNECTION_ID) or "")
    env[protocol.ENV_DEBUGGER_ROLE_ARN] = resources.debugger_role_arn
    env[protocol.ENV_SESSIONS_TABLE] = resources.sessions_table
    env[protocol.ENV_DEBUGGER_TABLE] = resources.debugger_table
    env[protocol.ENV_MANAGEMENT_URL] = resources.management_url
    return env


def is_instrumented(config: Mapping[str, Any], layer_version_arn: str) -> bool:
    variables = _variables(config) or {}
    if (
        protocol.ENV_SESSION_ID in variables
        or variables.get(protocol.ENV_EXEC_WRAPPER) == protocol.LAYER_WRAPPER_PATH
    ):
        return True
    ours = _layer_base(layer_version_arn)
    return any(_layer_base(str(layer.get("Arn"))) == ours for layer in config.get("Layers") or [])


def strip_instrumentation(config: Mapping[str, Any], layer_version_arn: str) -> Original:
    """The best reconstruction of an instrumented function's original when no record survived.

    Variables and layers come back exactly (plldb adds known names and its own layer); the timeout
    cannot be known, so the current one is kept.
    """
    variables = dict(_variables(config) or {})
    chained = variables.get(protocol.ENV_ORIGINAL_EXEC_WRAPPER)
    for name in protocol.INSTRUMENTATION_VARIABLES:
        if name == protocol.ENV_EXEC_WRAPPER and variables.get(name) != protocol.LAYER_WRAPPER_PATH:
            continue
        variables.pop(name, None)
    if chained:
        variables[protocol.ENV_EXEC_WRAPPER] = chained
    ours = _layer_base(layer_version_arn)
    layers = [
        str(layer["Arn"]) for layer in config.get("Layers") or [] if _layer_base(str(layer["Arn"])) != ours
    ]
    return Original(
        environment=variables or None, layers=layers, timeout=int(config.get("Timeout") or 3), derived=True
    )


# --- restore -----------------------------------------------------------------------------------------------
def restore_session(resources: Resources, session_id: str) -> Dict[str, Any]:
    """The client detached: close its session and put its stack back, reporting progress to it."""
    session = resources.get_session(session_id)
    if session is None:
        return {"action": "restore", "functions": [], "error": "no such session"}
    _close_session(resources, session_id)
    reporter = Reporter(resources, session_id, PHASE_RESTORE, session.get(protocol.A_CONNECTION_ID))
    results = _restore_for_session(resources, session, reporter)
    return {"action": "restore", "functions": [r.as_dict() for r in results]}


def restore_if_abandoned(
    resources: Resources, session_id: str, connection_id: str, not_before: float
) -> Dict[str, Any]:
    """After the grace period, restore only if the session never moved to a new connection."""
    wait = min(max(0.0, not_before - time.time()), MAX_GRACE_WAIT_SECONDS)
    if wait:
        time.sleep(wait)
    closed = resources.update_session(
        session_id,
        "SET #status = :closed",
        "#conn = :conn AND #status = :active",
        {"#status": protocol.A_STATUS, "#conn": protocol.A_CONNECTION_ID},
        {
            ":closed": {"S": protocol.STATUS_CLOSED},
            ":active": {"S": protocol.STATUS_ACTIVE},
            ":conn": {"S": connection_id},
        },
    )
    if closed is None:
        log(
            LOGGER,
            logging.INFO,
            "session reconnected or closed meanwhile; nothing to restore",
            session=redact(session_id),
        )
        return {"action": "restore_if_abandoned", "restored": False, "functions": []}
    session = resources.get_session(session_id) or {protocol.A_SESSION_ID: session_id}
    results = _restore_for_session(resources, session, Reporter(resources, session_id, PHASE_RESTORE, None))
    return {"action": "restore_if_abandoned", "restored": True, "functions": [r.as_dict() for r in results]}


def restore_stack(resources: Resources, stack_name: str) -> Dict[str, Any]:
    """Close every session on the stack and restore everything recorded for it (any machine may ask)."""
    closed: List[Dict[str, Any]] = []
    for session in _sessions_of_stack(resources, stack_name):
        if session.get(protocol.A_STATUS) in (protocol.STATUS_ACTIVE, protocol.STATUS_PENDING):
            _close_session(resources, str(session[protocol.A_SESSION_ID]))
            closed.append(session)
    records = _function_records(resources, stack_name)
    results = _restore_records(resources, records, None)
    _delete_lock(resources, stack_name, None)
    text = _restore_summary(stack_name, results)
    for session in closed:
        reporter = Reporter(
            resources,
            str(session[protocol.A_SESSION_ID]),
            PHASE_RESTORE,
            session.get(protocol.A_CONNECTION_ID),
        )
        reporter.done(
            results,
            "Another plldb command restored stack %s and closed this session: %s" % (stack_name, text),
        )
    log(
        LOGGER,
        logging.INFO,
        "stack restored",
        stack=stack_name,
        closedSessions=len(closed),
        functions=len(results),
    )
    return {
        "action": "restore_stack",
        "stackName": stack_name,
        "closedSessions": len(closed),
        "functions": [r.as_dict() for r in results],
    }


def _restore_for_session(
    resources: Resources, session: Mapping[str, Any], reporter: Reporter
) -> List[FunctionResult]:
    session_id = str(session[protocol.A_SESSION_ID])
    stack_name = str(session.get(protocol.A_STACK_NAME) or "")
    lock = _get_record(resources, _lock_key(stack_name)) if stack_name else None
    records = _function_records(resources, stack_name) if stack_name else []
    if lock is not None and lock.get(protocol.A_SESSION_ID) != session_id:
        # Another session owns this stack: touch only what this session itself recorded.
        records = [r for r in records if r.get(protocol.A_SESSION_ID) == session_id]
    reporter.progress(
        "started",
        "Restoring %d function%s of stack %s" % (len(records), "" if len(records) == 1 else "s", stack_name),
        total=len(records),
    )
    results = _restore_records(resources, records, reporter)
    if stack_name:
        _delete_lock(resources, stack_name, session_id)
    reporter.done(results, _restore_summary(stack_name, results))
    return results


def _restore_records(
    resources: Resources, records: List[Dict[str, Any]], reporter: Optional[Reporter]
) -> List[FunctionResult]:
    results: List[FunctionResult] = []
    lock = threading.Lock()

    def work(record: Dict[str, Any]) -> None:
        result = restore_function(resources, record)
        with lock:
            results.append(result)
        if reporter is not None:
            reporter.function(result)

    _parallel(work, records)
    return sorted(results, key=lambda r: r.logical_id)


def restore_function(resources: Resources, record: Mapping[str, Any]) -> FunctionResult:
    """Put one function back from its record; one failure never stops the others."""
    function = StackFunction(
        str(record.get(protocol.A_FUNCTION_NAME) or record[A_RESOURCE_ARN]),
        str(record.get(A_LOGICAL_ID) or ""),
        str(record.get(A_LOGICAL_ID) or ""),
    )
    try:
        original = Original.from_json(str(record[A_ORIGINAL]), bool(record.get(A_DERIVED)))
        status, text = put_back(
            resources, function, str(record[A_RESOURCE_ARN]), str(record.get(A_ROLE) or ""), original
        )
    except Exception as exc:
        LOGGER.exception("restore failed", extra={"fields": {"function": function.function_name}})
        return FunctionResult(function.function_name, function.logical_id, STATUS_FAILED, _aws_message(exc))
    return FunctionResult(function.function_name, function.logical_id, status, text)


def put_back(
    resources: Resources, function: StackFunction, function_arn: str, role_arn: str, original: Original
) -> Tuple[str, str]:
    """Restore the saved fields exactly, release the role, forget the record. Idempotent."""
    try:
        config = get_configuration(resources, function_arn)
    except ClientError as exc:
        if error_code(exc) != "ResourceNotFoundException":
            raise
        release_role(resources, role_arn, function_arn)
        _delete_record(resources, function_arn)
        return STATUS_SKIPPED, "the function no longer exists"
    text = "already in its deployed configuration"
    if is_instrumented(config, resources.layer_version_arn):

        def restored_configuration(current: Mapping[str, Any]) -> Dict[str, Any]:
            if not is_instrumented(current, resources.layer_version_arn):
                raise ChangedMeanwhile("redeployed while plldb restored it")  # the deploy wins
            return {
                "Environment": {"Variables": dict(original.environment or {})},
                "Layers": list(original.layers),
                "Timeout": original.timeout,
            }

        try:
            _update_until_applied(resources, function_arn, restored_configuration, known=config)
            text = "restored"
        except ChangedMeanwhile:
            text = "redeployed meanwhile; left as deployed"
    release_role(resources, role_arn, function_arn)
    _delete_record(resources, function_arn)
    return STATUS_OK, text


# --- status ------------------------------------------------------------------------------------------------
def status(resources: Resources) -> Dict[str, Any]:
    now = now_seconds()
    sessions = []
    for item in _scan(resources, resources.sessions_table):
        if item.get(protocol.A_STATUS) == protocol.STATUS_ACTIVE and int(item.get(protocol.A_TTL) or 0) > now:
            sessions.append(
                {
                    "stackName": item.get(protocol.A_STACK_NAME),
                    "owner": item.get(protocol.A_OWNER),
                    "createdAt": item.get(protocol.A_CREATED_AT),
                }
            )
    instrumented: Dict[str, int] = {}
    for item in _scan(resources, resources.instrumentation_table):
        if item.get(A_KIND) == KIND_FUNCTION:
            stack = str(item.get(protocol.A_STACK_NAME))
            instrumented[stack] = instrumented.get(stack, 0) + 1
    sessions.sort(key=lambda s: (str(s["stackName"]), str(s["createdAt"])))
    return {"action": "status", "activeSessions": sessions, "instrumentedFunctions": instrumented}


# --- Stack lock: one active session per stack -------------------------------------------------------------
def _lock_key(stack_name: str) -> str:
    return "lock:stack/" + stack_name


def acquire_stack_lock(
    resources: Resources, stack_name: str, session: Mapping[str, Any]
) -> Optional[Dict[str, Any]]:
    """Take the stack for this session; returns the other live session holding it, if any."""
    session_id = str(session[protocol.A_SESSION_ID])
    item = to_attribute_values(
        {
            A_RESOURCE_ARN: _lock_key(stack_name),
            A_KIND: KIND_STACK_LOCK,
            protocol.A_STACK_NAME: stack_name,
            protocol.A_SESSION_ID: session_id,
            A_SAVED_AT: now_seconds(),
        }
    )
    for _ in range(3):
        try:
            resources.dynamodb.put_item(
                TableName=resources.instrumentation_table,
                Item=item,
                ConditionExpression="attribute_not_exists(#key) OR #sid = :sid",
                ExpressionAttributeNames={"#key": A_RESOURCE_ARN, "#sid": protocol.A_SESSION_ID},
                ExpressionAttributeValues={":sid": {"S": session_id}},
            )
            return None
        except ClientError as exc:
            if not is_condition_failure(exc):
                raise
        lock = _get_record(resources, _lock_key(stack_name))
        if lock is None:
            continue
        holder_id = str(lock.get(protocol.A_SESSION_ID))
        holder = resources.get_session(holder_id)
        if (
            holder is not None
            and holder.get(protocol.A_STATUS) == protocol.STATUS_ACTIVE
            and int(holder.get(protocol.A_TTL) or 0) > now_seconds()
        ):
            return holder
        # The holder is closed, expired or gone: its lock is stale, take it over.
        try:
            resources.dynamodb.put_item(
                TableName=resources.instrumentation_table,
                Item=item,
                ConditionExpression="#sid = :holder",
                ExpressionAttributeNames={"#sid": protocol.A_SESSION_ID},
                ExpressionAttributeValues={":holder": {"S": holder_id}},
            )
            return None
        except ClientError as exc:
            if not is_condition_failure(exc):
                raise
    raise ManagerError("could not take the lock of stack %r (it keeps changing)" % stack_name)


def release_stack_lock(resources: Resources, stack_name: str, session_id: str) -> None:
    _delete_lock(resources, stack_name, session_id)


def _delete_lock(resources: Resources, stack_name: str, session_id: Optional[str]) -> None:
    kwargs: Dict[str, Any] = {}
    if session_id is not None:
        kwargs = {
            "ConditionExpression": "#sid = :sid",
            "ExpressionAttributeNames": {"#sid": protocol.A_SESSION_ID},
            "ExpressionAttributeValues": {":sid": {"S": session_id}},
        }
    try:
        resources.dynamodb.delete_item(
            TableName=resources.instrumentation_table,
            Key={A_RESOURCE_ARN: {"S": _lock_key(stack_name)}},
            **kwargs,
        )
    except ClientError as exc:
        if not is_condition_failure(exc):
            raise


# --- The execution role's policy, reference-counted --------------------------------------------------------
def _role_lock(role_arn: str) -> threading.Lock:
    with _role_locks_guard:
        return _role_locks.setdefault(role_arn, threading.Lock())


def _role_name(role_arn: str) -> str:
    return role_arn.rsplit("/", 1)[-1]


def reference_role(resources: Resources, role_arn: str, function_arn: str) -> None:
    """Make sure the role carries the policy while ``function_arn`` is instrumented.

    The role's record lists the functions using it. Whether the policy was attached before plldb is
    decided once, when the first user arrives, and written down *before* attaching, so a crash can
    never make plldb believe it did not attach a policy it did.
    """
    if not role_arn or not resources.instrumented_function_policy_arn:
        return
    with _role_lock(role_arn):
        response = resources.dynamodb.update_item(
            TableName=resources.instrumentation_table,
            Key={A_RESOURCE_ARN: {"S": role_arn}},
            UpdateExpression="ADD #users :fn SET #kind = :kind",
            ExpressionAttributeNames={"#users": A_USERS, "#kind": A_KIND},
            ExpressionAttributeValues={":fn": {"SS": [function_arn]}, ":kind": {"S": KIND_ROLE}},
            ReturnValues="ALL_NEW",
        )
        record = from_item(response.get("Attributes")) or {}
        preexisting = record.get(A_PREEXISTING)
        if preexisting is None:
            preexisting = _policy_attached(resources, role_arn)
            try:
                resources.dynamodb.update_item(
                    TableName=resources.instrumentation_table,
                    Key={A_RESOURCE_ARN: {"S": role_arn}},
                    UpdateExpression="SET #pre = :pre",
                    ConditionExpression="attribute_not_exists(#pre)",
                    ExpressionAttributeNames={"#pre": A_PREEXISTING},
                    ExpressionAttributeValues={":pre": {"BOOL": preexisting}},
                )
            except ClientError as exc:
                if not is_condition_failure(exc):
                    raise
                preexisting = bool((_get_record(resources, role_arn) or {}).get(A_PREEXISTING))
        if not preexisting:
            resources.iam.attach_role_policy(
                RoleName=_role_name(role_arn), PolicyArn=resources.instrumented_function_policy_arn
            )


def release_role(resources: Resources, role_arn: str, function_arn: str) -> None:
    """Drop this function's use of the role; detach the policy when plldb attached it and nobody uses it."""
    if not role_arn or not resources.instrumented_function_policy_arn:
        return
    with _role_lock(role_arn):
        try:
            response = resources.dynamodb.update_item(
                TableName=resources.instrumentation_table,
                Key={A_RESOURCE_ARN: {"S": role_arn}},
                UpdateExpression="DELETE #users :fn",
                ConditionExpression="attribute_exists(#key)",
                ExpressionAttributeNames={"#users": A_USERS, "#key": A_RESOURCE_ARN},
                ExpressionAttributeValues={":fn": {"SS": [function_arn]}},
                ReturnValues="ALL_NEW",
            )
        except ClientError as exc:
            if is_condition_failure(exc):
                return
            raise
        record = from_item(response.get("Attributes")) or {}
        if record.get(A_USERS):
            return
        plldb_attached = record.get(A_PREEXISTING) is False
        if plldb_attached:
            _detach_policy(resources, role_arn)
        try:
            resources.dynamodb.delete_item(
                TableName=resources.instrumentation_table,
                Key={A_RESOURCE_ARN: {"S": role_arn}},
                ConditionExpression="attribute_not_exists(#users)",
                ExpressionAttributeNames={"#users": A_USERS},
            )
        except ClientError as exc:
            if not is_condition_failure(exc):
                raise
            # Another function started using the role while we detached: it needs the policy back.
            if plldb_attached:
                resources.iam.attach_role_policy(
                    RoleName=_role_name(role_arn), PolicyArn=resources.instrumented_function_policy_arn
                )


def _policy_attached(resources: Resources, role_arn: str) -> bool:
    paginator = resources.iam.get_paginator("list_attached_role_policies")
    for page in paginator.paginate(RoleName=_role_name(role_arn)):
        for policy in page.get("AttachedPolicies", []):
            if policy.get("PolicyArn") == resources.instrumented_function_policy_arn:
                return True
    return False


def _detach_policy(resources: Resources, role_arn: str) -> None:
    try:
        resources.iam.detach_role_policy(
            RoleName=_role_name(role_arn), PolicyArn=resources.instrumented_function_policy_arn
        )
    except ClientError as exc:
        if error_code(exc) != "NoSuchEntity":
            raise


# --- Stack discovery ---------------------------------------------------------------------------------------
def list_stack_functions(resources: Resources, stack_name: str) -> List[StackFunction]:
    """Every Lambda function of the stack and of its nested stacks, in template order."""
    functions: List[StackFunction] = []

    def walk(stack: str, prefix: str, depth: int) -> None:
        paginator = resources.cloudformation.get_paginator("list_stack_resources")
        try:
            pages = list(paginator.paginate(StackName=stack))
        except ClientError as exc:
            if error_code(exc) == "ValidationError" and "does not exist" in _aws_message(exc):
                raise StackNotFound("Stack %r does not exist in %s." % (stack_name, resources.region))
            raise
        for page in pages:
            for summary in page.get("StackResourceSummaries", []):
                physical = summary.get("PhysicalResourceId")
                state = str(summary.get("ResourceStatus") or "")
                if not physical or state.startswith("DELETE"):
                    continue
                logical = str(summary.get("LogicalResourceId"))
                kind = summary.get("ResourceType")
                if kind == "AWS::Lambda::Function":
                    functions.append(StackFunction(str(physical), logical, prefix + logical))
                elif kind == "AWS::CloudFormation::Stack" and depth < MAX_NESTING_DEPTH:
                    walk(str(physical), prefix + logical + "/", depth + 1)

    walk(stack_name, "", 0)
    return functions


def matches(function: StackFunction, patterns: List[str]) -> bool:
    """Empty patterns select everything; a pattern may name the logical id, its nested path or the name."""
    if not patterns:
        return True
    candidates = (function.logical_id, function.path, function.function_name)
    return any(fnmatch.fnmatchcase(candidate, pattern) for pattern in patterns for candidate in candidates)


# --- Lambda configuration ----------------------------------------------------------------------------------
def get_configuration(resources: Resources, function: str) -> Dict[str, Any]:
    return resources.lambda_client.get_function_configuration(FunctionName=function)


def _update_until_applied(
    resources: Resources,
    function: str,
    changes_for: Callable[[Mapping[str, Any]], Dict[str, Any]],
    known: Optional[Mapping[str, Any]] = None,
) -> Dict[str, Any]:
    """Apply a configuration change once no other update is running; retry conflicts; wait for it.

    Lambda's control plane allows 15 requests a second per account (reads included), so a
    configuration just read (``known``) is reused and the update's own answer ends the wait when it
    is already settled: one read and one write per function when nothing else is updating it.
    """
    config = (
        dict(known) if known is not None and _settled(known) else _wait_until_updated(resources, function)
    )
    for attempt in range(CONFLICT_RETRIES):
        changes = changes_for(config)
        revision = config.get("RevisionId")
        if revision:
            changes["RevisionId"] = revision
        try:
            updated = resources.lambda_client.update_function_configuration(FunctionName=function, **changes)
        except ClientError as exc:
            code = error_code(exc)
            if (
                code not in ("ResourceConflictException", "PreconditionFailedException")
                or attempt == CONFLICT_RETRIES - 1
            ):
                raise
            time.sleep(min(0.2 * (2**attempt), 3.0))
            config = _wait_until_updated(resources, function)
            continue
        updated.pop("ResponseMetadata", None)
        return updated if _settled(updated) else _wait_until_updated(resources, function)
    raise ManagerError("the configuration of %s kept changing" % function)


def _settled(config: Mapping[str, Any]) -> bool:
    """No update is running (a failed one is raised by _wait_until_updated, so it is not settled)."""
    return config.get("LastUpdateStatus") in (None, "Successful") and config.get("State") != "Pending"


def _wait_until_updated(resources: Resources, function: str) -> Dict[str, Any]:
    deadline = time.monotonic() + UPDATE_WAIT_SECONDS
    delay = 0.1
    while True:
        config = get_configuration(resources, function)
        state = config.get("LastUpdateStatus")
        if state == "Failed":
            raise ManagerError(
                "the last update of %s failed: %s"
                % (function, config.get("LastUpdateStatusReason") or "no reason given")
            )
        if state != "InProgress" and config.get("State") != "Pending":
            return config
        if time.monotonic() > deadline:
            raise ManagerError("%s is still updating after %d s" % (function, UPDATE_WAIT_SECONDS))
        time.sleep(delay)
        delay = min(delay * 2, 2.0)


def _variables(config: Mapping[str, Any]) -> Optional[Dict[str, str]]:
    environment = config.get("Environment")
    if not environment or "Variables" not in environment:
        return None
    return dict(environment["Variables"] or {})


def _layer_base(layer_version_arn: str) -> str:
    """arn:...:layer:NAME:VERSION -> arn:...:layer:NAME (any version of the same layer)."""
    return layer_version_arn.rsplit(":", 1)[0] if layer_version_arn.count(":") >= 7 else layer_version_arn


def _unqualified(function_arn: str) -> str:
    parts = function_arn.split(":")
    return ":".join(parts[:7]) if len(parts) > 7 else function_arn


def _patterns(value: Any) -> List[str]:
    """FunctionPatterns as a list, whether stored as a list, a string set or one string."""
    if isinstance(value, str):
        value = [value]
    return [str(p) for p in value or [] if str(p)]


def _session_timeout(session: Mapping[str, Any]) -> int:
    try:
        value = int(session.get(protocol.A_FUNCTION_TIMEOUT) or DEFAULT_FUNCTION_TIMEOUT)
    except (TypeError, ValueError):
        value = DEFAULT_FUNCTION_TIMEOUT
    return max(1, min(MAX_TIMEOUT_SECONDS, value))


# --- Records -------------------------------------------------------------------------------------------------
def _get_record(resources: Resources, key: str) -> Optional[Dict[str, Any]]:
    response = resources.dynamodb.get_item(
        TableName=resources.instrumentation_table, Key={A_RESOURCE_ARN: {"S": key}}, ConsistentRead=True
    )
    return from_item(response.get("Item"))


def _delete_record(resources: Resources, key: str) -> None:
    resources.dynamodb.delete_item(
        TableName=resources.instrumentation_table, Key={A_RESOURCE_ARN: {"S": key}}
    )


def _function_records(resources: Resources, stack_name: str) -> List[Dict[str, Any]]:
    items = _query(
        resources, resources.instrumentation_table, protocol.STACK_INDEX, protocol.A_STACK_NAME, stack_name
    )
    records = []
    for item in items:
        if item.get(A_KIND) != KIND_FUNCTION:
            continue
        # The index is eventually consistent: read each record itself.
        record = _get_record(resources, str(item[A_RESOURCE_ARN]))
        if record is not None and record.get(protocol.A_STACK_NAME) == stack_name:
            records.append(record)
    return records


def _sessions_of_stack(resources: Resources, stack_name: str) -> List[Dict[str, Any]]:
    return _query(
        resources, resources.sessions_table, protocol.STACK_INDEX, protocol.A_STACK_NAME, stack_name
    )


def _query(resources: Resources, table: str, index: str, attribute: str, value: str) -> List[Dict[str, Any]]:
    paginator = resources.dynamodb.get_paginator("query")
    items: List[Dict[str, Any]] = []
    for page in paginator.paginate(
        TableName=table,
        IndexName=index,
        KeyConditionExpression="#a = :v",
        ExpressionAttributeNames={"#a": attribute},
        ExpressionAttributeValues={":v": {"S": value}},
    ):
        items.extend(from_item(item) or {} for item in page.get("Items", []))
    return items


def _scan(resources: Resources, table: str) -> List[Dict[str, Any]]:
    paginator = resources.dynamodb.get_paginator("scan")
    items: List[Dict[str, Any]] = []
    for page in paginator.paginate(TableName=table, ConsistentRead=True):
        items.extend(from_item(item) or {} for item in page.get("Items", []))
    return items


def _close_session(resources: Resources, session_id: str) -> None:
    resources.update_session(
        session_id,
        "SET #status = :closed",
        "attribute_exists(#sid)",
        {"#status": protocol.A_STATUS, "#sid": protocol.A_SESSION_ID},
        {":closed": {"S": protocol.STATUS_CLOSED}},
    )


# --- Small helpers -------------------------------------------------------------------------------------------
def _parallel(work: Callable[[Any], Any], items: List[Any]) -> None:
    if not items:
        return
    with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL_FUNCTIONS, len(items))) as pool:
        for future in [pool.submit(work, item) for item in items]:
            future.result()


def _restore_summary(stack_name: str, results: List[FunctionResult]) -> str:
    failed = [r for r in results if r.status == STATUS_FAILED]
    if failed:
        return "%d of %d functions of stack %s could not be restored" % (
            len(failed),
            len(results),
            stack_name,
        )
    return "Stack %s restored (%d function%s)" % (stack_name, len(results), "" if len(results) == 1 else "s")


def _when(epoch: Any) -> str:
    try:
        moment = datetime.datetime.fromtimestamp(int(epoch), datetime.timezone.utc)
    except (TypeError, ValueError, OverflowError, OSError):
        return "an unknown time"
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def _aws_message(exc: BaseException) -> str:
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        return "%s: %s" % (error.get("Code", "Error"), error.get("Message", str(exc)))
    return str(exc) or exc.__class__.__name__
