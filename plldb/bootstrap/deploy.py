"""`plldb bootstrap setup / destroy / status`: deploy, remove and inspect the helper stack.

Setup packages the handlers and the layer, uploads them under content-hash keys to the account's
asset bucket and creates or updates the stack; re-running it with nothing changed makes no change
at all. Destroy never deletes the stack while functions are still instrumented: it restores them
through the manager first (and refuses while a developer is attached, unless forced).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import boto3
import botocore.exceptions

from plldb.bootstrap import packaging
from plldb.bootstrap.helper_stack import (
    DEFAULT_STACK_NAME,
    TEMPLATE_VERSION,
    HelperStack,
    describe_helper_stack,
    invoke_manager,
    load_helper_stack,
    not_bootstrapped,
)
from plldb.errors import PlldbError

EventCallback = Callable[[str], None]
MAX_HELPER_STACK_NAME = 100  # "<name>-instrumented-function" must fit IAM's 128 characters

HELPER_STACK_TAG = "plldb:helper-stack"
DEFAULT_PARAMETERS = {
    "PythonRuntime": "python3.13",
    "LogLevel": "INFO",
    "StageName": "plldb",
    "DisconnectGraceSeconds": "10",
}
TEMPLATE_BODY_LIMIT = 51_200  # CloudFormation's TemplateBody quota; larger templates go through S3
STACK_WAIT_SECONDS = 1800.0
BUSY_SUFFIX = "_IN_PROGRESS"
NO_UPDATES = "No updates are to be performed"


@dataclass
class SetupResult:
    stack_name: str
    action: str  # "created" | "updated" | "unchanged"
    bucket: str
    outputs: dict[str, str]
    uploaded: list[str] = field(default_factory=list)


@dataclass
class DestroyResult:
    stack_name: str
    stack_deleted: bool
    bucket: str
    bucket_deleted: bool
    bucket_kept_for: list[str] = field(default_factory=list)
    restored: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class StatusReport:
    stack_name: str
    region: str
    stack_status: str
    template_version: str
    outdated: bool
    active_sessions: list[dict[str, Any]]


def _noop(message: str) -> None:
    return None


def asset_bucket_name(account_id: str, region: str) -> str:
    return f"plldb-assets-{account_id}-{region}"


def _account_assets(session: boto3.Session) -> tuple[str, str, str]:
    """(region, account id, asset bucket): the bucket is per account and region, shared by helper stacks."""
    region = str(session.region_name)
    account_id = session.client("sts").get_caller_identity()["Account"]
    return region, account_id, asset_bucket_name(account_id, region)


def _refuse_busy(stack_name: str, stack: dict[str, Any]) -> None:
    """Nothing may start while CloudFormation is still working on the stack."""
    status = str(stack["StackStatus"])
    if status.endswith(BUSY_SUFFIX):
        raise PlldbError(
            f"The helper stack {stack_name!r} is busy ({status}).", "Wait until it settles and run again."
        )


def _error(exc: botocore.exceptions.ClientError) -> tuple[str, str]:
    error = exc.response.get("Error", {})
    return str(error.get("Code", "")), str(error.get("Message", ""))


# --- setup ---------------------------------------------------------------------------------------------
def setup(
    session: boto3.Session,
    stack_name: str = DEFAULT_STACK_NAME,
    *,
    parameters: dict[str, str] | None = None,
    on_event: EventCallback = _noop,
    poll_seconds: float = 2.0,
) -> SetupResult:
    """Create or update the helper stack; a no-op when the template, code and parameters are unchanged."""
    if len(stack_name) > MAX_HELPER_STACK_NAME:
        raise PlldbError(
            f"A helper stack name has at most {MAX_HELPER_STACK_NAME} characters ({stack_name!r} has "
            f"{len(stack_name)}): its IAM policy is named after it.",
            "Choose a shorter name.",
        )
    region, account_id, bucket = _account_assets(session)
    s3 = session.client("s3")
    ensure_asset_bucket(s3, bucket, region, account_id, on_event)

    handlers_zip = packaging.build_handlers_zip()
    layer_zip = packaging.build_layer_zip()
    handlers_key = f"handlers/{packaging.sha256_hex(handlers_zip)}.zip"
    layer_key = f"layer/{packaging.sha256_hex(layer_zip)}.zip"
    uploaded = [
        key
        for key, data in ((handlers_key, handlers_zip), (layer_key, layer_zip))
        if upload_asset(s3, bucket, key, data, account_id)
    ]
    for key in uploaded:
        on_event(f"Uploaded s3://{bucket}/{key}")

    body = packaging.template_body()
    wanted = {**DEFAULT_PARAMETERS, **(parameters or {})}
    wanted.update({"AssetsBucket": bucket, "HandlersKey": handlers_key, "LayerKey": layer_key})
    stack_arguments = {
        "Parameters": [{"ParameterKey": k, "ParameterValue": v} for k, v in sorted(wanted.items())],
        "Capabilities": ["CAPABILITY_NAMED_IAM"],  # the instrumented-function policy has a derived name
        "Tags": [{"Key": HELPER_STACK_TAG, "Value": "true"}],
        **_template_argument(s3, bucket, body, account_id),
    }
    cloudformation = session.client("cloudformation")

    existing = describe_helper_stack(session, stack_name)
    if existing is not None:
        _refuse_busy(stack_name, existing)
        status = str(existing["StackStatus"])
        if status in {"ROLLBACK_COMPLETE", "ROLLBACK_FAILED", "DELETE_FAILED"}:
            on_event(f"Removing the failed helper stack {stack_name} ({status}) before creating it again")
            cloudformation.delete_stack(StackName=existing["StackId"])
            wait_for_stack(cloudformation, existing["StackId"], "DELETE", on_event, poll_seconds)
            existing = None
        elif status == "UPDATE_ROLLBACK_FAILED":
            raise PlldbError(
                f"The helper stack {stack_name!r} is in {status}.",
                "Continue the rollback in the CloudFormation console, then run 'plldb bootstrap setup' again.",
            )
    if existing is None:
        on_event(f"Creating the helper stack {stack_name}")
        created = cloudformation.create_stack(StackName=stack_name, **stack_arguments)
        wait_for_stack(cloudformation, created["StackId"], "CREATE", on_event, poll_seconds)
        action = "created"
    elif _unchanged(cloudformation, existing, body, wanted):
        action = "unchanged"
    else:
        on_event(f"Updating the helper stack {stack_name}")
        try:
            cloudformation.update_stack(StackName=existing["StackId"], **stack_arguments)
            wait_for_stack(cloudformation, existing["StackId"], "UPDATE", on_event, poll_seconds)
            action = "updated"
        except botocore.exceptions.ClientError as exc:
            code, message = _error(exc)
            if code != "ValidationError" or NO_UPDATES not in message:
                raise
            action = "unchanged"
    helper = load_helper_stack(session, stack_name)
    outputs = _outputs(session, stack_name)
    on_event(f"Helper stack {helper.stack_name} {action}")
    return SetupResult(stack_name, action, bucket, outputs, uploaded)


def _unchanged(cloudformation: Any, stack: dict[str, Any], body: str, wanted: dict[str, str]) -> bool:
    """Same parameters and same template text: there is nothing to deploy."""
    current = {p["ParameterKey"]: p.get("ParameterValue", "") for p in stack.get("Parameters", [])}
    if current != wanted:
        return False
    deployed = cloudformation.get_template(StackName=stack["StackId"], TemplateStage="Original")[
        "TemplateBody"
    ]
    return isinstance(deployed, str) and deployed.strip() == body.strip()


def _template_argument(s3: Any, bucket: str, body: str, account_id: str) -> dict[str, str]:
    data = body.encode("utf-8")
    if len(data) <= TEMPLATE_BODY_LIMIT:
        return {"TemplateBody": body}
    key = f"templates/{packaging.sha256_hex(data)}.yaml"
    upload_asset(s3, bucket, key, data, account_id)
    return {"TemplateURL": f"https://{bucket}.s3.amazonaws.com/{key}"}


def _outputs(session: boto3.Session, stack_name: str) -> dict[str, str]:
    stack = describe_helper_stack(session, stack_name) or {}
    return {o["OutputKey"]: o.get("OutputValue", "") for o in stack.get("Outputs", [])}


# --- The asset bucket -----------------------------------------------------------------------------------
def ensure_asset_bucket(s3: Any, bucket: str, region: str, account_id: str, on_event: EventCallback) -> None:
    """Create the bucket if needed: private (public access blocked) and encrypted at rest."""
    try:
        s3.head_bucket(Bucket=bucket, ExpectedBucketOwner=account_id)
        exists = True
    except botocore.exceptions.ClientError as exc:
        code, _ = _error(exc)
        if code in {"403", "AccessDenied", "Forbidden"}:
            raise PlldbError(
                f"The asset bucket {bucket!r} exists but is not yours to use.",
                "Check that your credentials may use it, or that no other account owns this name.",
            )
        if code not in {"404", "NoSuchBucket", "NotFound"}:
            raise
        exists = False
    if exists and _bucket_is_private(s3, bucket):
        return
    if not exists:
        on_event(f"Creating the asset bucket {bucket}")
        arguments: dict[str, Any] = {"Bucket": bucket}
        if region != "us-east-1":
            arguments["CreateBucketConfiguration"] = {"LocationConstraint": region}
        s3.create_bucket(**arguments)
    s3.put_public_access_block(
        Bucket=bucket,
        PublicAccessBlockConfiguration={
            "BlockPublicAcls": True,
            "IgnorePublicAcls": True,
            "BlockPublicPolicy": True,
            "RestrictPublicBuckets": True,
        },
    )
    s3.put_bucket_encryption(
        Bucket=bucket,
        ServerSideEncryptionConfiguration={
            "Rules": [
                {"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}, "BucketKeyEnabled": True}
            ]
        },
    )


def _bucket_is_private(s3: Any, bucket: str) -> bool:
    try:
        config = s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
    except botocore.exceptions.ClientError:
        return False
    return all(
        config.get(key)
        for key in ("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy", "RestrictPublicBuckets")
    )


def upload_asset(s3: Any, bucket: str, key: str, data: bytes, account_id: str) -> bool:
    """Upload unless the content-hash key is there already; True when it uploaded."""
    try:
        s3.head_object(Bucket=bucket, Key=key, ExpectedBucketOwner=account_id)
        return False
    except botocore.exceptions.ClientError as exc:
        code, _ = _error(exc)
        if code not in {"404", "NoSuchKey", "NotFound"}:
            raise
    s3.put_object(Bucket=bucket, Key=key, Body=data, ExpectedBucketOwner=account_id)
    return True


# --- Waiting for CloudFormation ---------------------------------------------------------------------------
def wait_for_stack(
    cloudformation: Any, stack_id: str, operation: str, on_event: EventCallback, poll_seconds: float = 2.0
) -> dict[str, Any]:
    """Poll until the operation settles, reporting each new stack event; PlldbError if it failed."""
    started = time.time()
    seen: set[str] = set()
    delay = min(0.2, poll_seconds)
    deadline = time.monotonic() + STACK_WAIT_SECONDS
    while True:
        stack = cloudformation.describe_stacks(StackName=stack_id)["Stacks"][0]
        status = str(stack["StackStatus"])
        events = _new_events(cloudformation, stack_id, started, seen)
        for event in events:
            reason = f" ({event['ResourceStatusReason']})" if event.get("ResourceStatusReason") else ""
            on_event(f"{event['LogicalResourceId']} {event['ResourceStatus']}{reason}")
        if not status.endswith(BUSY_SUFFIX):
            if status == f"{operation}_COMPLETE":
                return stack
            raise _failure(cloudformation, stack, operation, started)
        if time.monotonic() > deadline:
            raise PlldbError(
                f"The helper stack is still {status} after {int(STACK_WAIT_SECONDS)} s.",
                "Check it in the CloudFormation console.",
            )
        time.sleep(delay)
        delay = min(delay * 1.5, poll_seconds)


def _new_events(cloudformation: Any, stack_id: str, since: float, seen: set[str]) -> list[dict[str, Any]]:
    try:
        events = cloudformation.describe_stack_events(StackName=stack_id).get("StackEvents", [])
    except botocore.exceptions.ClientError:
        return []
    fresh = []
    for event in events:
        event_id = str(event.get("EventId"))
        timestamp = event.get("Timestamp")
        if event_id in seen or (timestamp is not None and timestamp.timestamp() < since - 1):
            continue
        seen.add(event_id)
        fresh.append(event)
    fresh.reverse()  # oldest first
    return fresh


def _failure(cloudformation: Any, stack: dict[str, Any], operation: str, since: float) -> PlldbError:
    reasons = []
    try:
        events = cloudformation.describe_stack_events(StackName=stack["StackId"]).get("StackEvents", [])
    except botocore.exceptions.ClientError:
        events = []
    for event in reversed(events):
        timestamp = event.get("Timestamp")
        if timestamp is not None and timestamp.timestamp() < since - 1:
            continue
        if str(event.get("ResourceStatus", "")).endswith("FAILED") and event.get("ResourceStatusReason"):
            reasons.append(f"{event['LogicalResourceId']}: {event['ResourceStatusReason']}")
    detail = reasons[0] if reasons else str(stack.get("StackStatusReason") or "no reason given")
    return PlldbError(
        f"The helper stack {stack['StackName']!r} {operation.lower()} failed ({stack['StackStatus']}): {detail}.",
        "Fix the cause and run the command again.",
    )


# --- destroy ---------------------------------------------------------------------------------------------
def destroy(
    session: boto3.Session,
    stack_name: str = DEFAULT_STACK_NAME,
    *,
    force: bool = False,
    on_event: EventCallback = _noop,
    poll_seconds: float = 2.0,
) -> DestroyResult:
    """Restore every instrumented function, delete the stack, then empty and delete the asset bucket."""
    region, _account_id, bucket = _account_assets(session)
    cloudformation = session.client("cloudformation")
    stack = describe_helper_stack(session, stack_name)
    restored: list[dict[str, Any]] = []
    if stack is not None:
        _refuse_busy(stack_name, stack)
    if stack is not None and _manager_usable(stack):
        helper = load_helper_stack(session, stack_name)
        restored = _restore_everything(session, helper, force, on_event)
    if stack is not None:
        payloads = {o["OutputKey"]: o.get("OutputValue") for o in stack.get("Outputs", [])}.get(
            "PayloadBucketName"
        )
        if payloads:
            empty_bucket(session.client("s3"), str(payloads))
        on_event(f"Deleting the helper stack {stack_name}")
        cloudformation.delete_stack(StackName=stack["StackId"])
        wait_for_stack(cloudformation, stack["StackId"], "DELETE", on_event, poll_seconds)
    users = _other_stacks_using_bucket(cloudformation, bucket, stack["StackId"] if stack else None)
    bucket_deleted = False
    if users:
        on_event(f"Keeping the asset bucket {bucket}: the helper stack(s) {', '.join(users)} use it")
    else:
        bucket_deleted = delete_bucket(session.client("s3"), bucket, on_event)
    if stack is None and not bucket_deleted and not users:
        raise not_bootstrapped(stack_name, region)
    return DestroyResult(stack_name, stack is not None, bucket, bucket_deleted, users, restored)


def _manager_usable(stack: dict[str, Any]) -> bool:
    outputs = {o["OutputKey"] for o in stack.get("Outputs", [])}
    return "ManagerFunctionName" in outputs and not str(stack["StackStatus"]).startswith("ROLLBACK")


def _restore_everything(
    session: boto3.Session, helper: HelperStack, force: bool, on_event: EventCallback
) -> list[dict[str, Any]]:
    """End every active session: restore its stack's functions with these credentials, then release it."""
    from plldb.local.instrument import restore_stack
    from plldb.local.session import connect_url, sigv4_signer
    from plldb.local.session.release import release_stack

    report = invoke_manager(session, helper, {"action": "status"})
    sessions = report.get("activeSessions") or []
    if sessions and not force:
        described = "; ".join(
            f"stack {s.get('stackName')} by {s.get('owner') or 'someone'} since {utc_time_text(s.get('createdAt'))}"
            for s in sessions
        )
        raise PlldbError(
            f"{len(sessions)} plldb session(s) are active: {described}.",
            "Detach them first, or pass --force to restore their functions and end them.",
        )
    restored: list[dict[str, Any]] = []
    for stack_id, stack_name in sorted({(str(s.get("stackId")), str(s.get("stackName"))) for s in sessions}):
        on_event(f"Restoring the functions of stack {stack_name}")
        results = restore_stack(session, helper, stack_id, report=lambda _message: None)
        for result in results:
            on_event(f"  {result.function.name}: {result.status} ({result.message})")
        failed = [r.function.name for r in results if r.status == "failed"]
        if failed:
            raise PlldbError(
                f"Could not restore {', '.join(failed)} of stack {stack_name}; the helper stack was kept so "
                "nothing is lost.",
                f"Fix the cause and run 'plldb detach --stack-name {stack_name}' or this command again.",
            )
        asyncio.run(
            release_stack(connect_url(helper.websocket_url), sigv4_signer(session, helper.region), stack_id)
        )
        restored.extend(
            {
                "functionName": r.function.name,
                "logicalId": r.function.path,
                "status": r.status,
                "message": r.message,
            }
            for r in results
        )
    return restored


def _other_stacks_using_bucket(cloudformation: Any, bucket: str, except_stack_id: str | None) -> list[str]:
    users = []
    for page in cloudformation.get_paginator("describe_stacks").paginate():
        for stack in page.get("Stacks", []):
            if stack.get("StackId") == except_stack_id or stack.get("StackStatus") == "DELETE_COMPLETE":
                continue
            parameters = {p["ParameterKey"]: p.get("ParameterValue") for p in stack.get("Parameters", [])}
            if parameters.get("AssetsBucket") == bucket:
                users.append(str(stack["StackName"]))
    return sorted(users)


def empty_bucket(s3: Any, bucket: str) -> bool:
    """Delete every object version and delete marker; False if the bucket does not exist."""
    try:
        for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
            doomed = [
                {"Key": item["Key"], "VersionId": item["VersionId"]}
                for kind in ("Versions", "DeleteMarkers")
                for item in page.get(kind, [])
            ]
            for start in range(0, len(doomed), 1000):
                s3.delete_objects(
                    Bucket=bucket, Delete={"Objects": doomed[start : start + 1000], "Quiet": True}
                )
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            leftovers = [{"Key": item["Key"]} for item in page.get("Contents", [])]
            if leftovers:
                s3.delete_objects(Bucket=bucket, Delete={"Objects": leftovers, "Quiet": True})
    except botocore.exceptions.ClientError as exc:
        code, _ = _error(exc)
        if code in {"NoSuchBucket", "404"}:
            return False
        raise
    return True


def delete_bucket(s3: Any, bucket: str, on_event: EventCallback) -> bool:
    """Empty the bucket, then delete it; False if it did not exist."""
    if not empty_bucket(s3, bucket):
        return False
    try:
        s3.delete_bucket(Bucket=bucket)
    except botocore.exceptions.ClientError as exc:
        code, _ = _error(exc)
        if code in {"NoSuchBucket", "404"}:
            return False
        raise
    return True


# --- status ----------------------------------------------------------------------------------------------
def status(session: boto3.Session, stack_name: str = DEFAULT_STACK_NAME) -> StatusReport:
    stack = describe_helper_stack(session, stack_name)
    region = str(session.region_name)
    if stack is None:
        raise not_bootstrapped(stack_name, region)
    version = {o["OutputKey"]: o.get("OutputValue", "") for o in stack.get("Outputs", [])}.get(
        "TemplateVersion", ""
    )
    if version != TEMPLATE_VERSION:
        # An older manager speaks another protocol: only its version is worth reporting.
        return StatusReport(stack_name, region, str(stack.get("StackStatus")), version or "unknown", True, [])
    helper = load_helper_stack(session, stack_name)
    report = invoke_manager(session, helper, {"action": "status"})
    return StatusReport(
        stack_name=helper.stack_name,
        region=helper.region,
        stack_status=helper.status,
        template_version=helper.template_version,
        outdated=False,
        active_sessions=list(report.get("activeSessions") or []),
    )


def utc_time_text(epoch: Any) -> str:
    """An epoch time as people read it (sessions' createdAt), or "an unknown time" when it is none."""
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(int(epoch)))
    except (TypeError, ValueError, OverflowError):
        return "an unknown time"
