"""`sam deploy` without the SAM CLI: package a SAM template's local artifacts and deploy it with CloudFormation.

It makes only the boto3 calls `sam package` + `sam deploy` make (S3 uploads, create/update stack, describe
calls), so it works against AWS and against whatever endpoint the session targets, such as the local cloud.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import stat
import sys
import time
import zipfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import botocore.exceptions

from plldb.errors import PlldbError
from plldb.localcloud.documents import parse_json_or_yaml

DEFAULT_CAPABILITIES = ("CAPABILITY_IAM", "CAPABILITY_NAMED_IAM", "CAPABILITY_AUTO_EXPAND")
TEMPLATE_BODY_LIMIT = 51_200  # CloudFormation refuses a TemplateBody larger than this; use TemplateURL
POLL_SECONDS = 0.2
WAIT_TIMEOUT_SECONDS = 900.0

# Files that never belong in a deployment package (what `sam build` would not copy either).
EXCLUDED_NAMES = frozenset({"__pycache__", ".aws-sam", ".git", ".pytest_cache", ".mypy_cache", ".DS_Store"})
EXCLUDED_SUFFIXES = (".pyc", ".pyo")
ZIP_TIMESTAMP = (1980, 1, 1, 0, 0, 0)  # fixed, so the same files always give the same zip and S3 key

FAILED_STATUSES = frozenset(
    {
        "CREATE_FAILED",
        "ROLLBACK_COMPLETE",
        "ROLLBACK_FAILED",
        "DELETE_FAILED",
        "UPDATE_FAILED",
        "UPDATE_ROLLBACK_COMPLETE",
        "UPDATE_ROLLBACK_FAILED",
        "IMPORT_ROLLBACK_COMPLETE",
        "IMPORT_ROLLBACK_FAILED",
    }
)

EventCallback = Callable[[str], None]


@dataclass(frozen=True)
class ArtifactProperty:
    """A property that may name a local file or folder, and how its uploaded location is written."""

    name: str
    zipped: bool  # a file, or a folder that is zipped; False: it must be a file
    location: Callable[[str, str], Any]  # (bucket, key) -> the property's new value
    default: str | None = None  # what an absent property means


def _s3_uri(bucket: str, key: str) -> str:
    return f"s3://{bucket}/{key}"


def _code_location(bucket: str, key: str) -> dict[str, str]:
    return {"S3Bucket": bucket, "S3Key": key}


def _s3_location(bucket: str, key: str) -> dict[str, str]:
    return {"Bucket": bucket, "Key": key}


# What `sam package` uploads, by resource type (the same property names CloudFormation's package uses).
ARTIFACT_PROPERTIES = {
    "AWS::Serverless::Function": ArtifactProperty("CodeUri", True, _s3_uri, default="."),
    "AWS::Serverless::LayerVersion": ArtifactProperty("ContentUri", True, _s3_uri),
    "AWS::Serverless::Api": ArtifactProperty("DefinitionUri", False, _s3_uri),
    "AWS::Serverless::HttpApi": ArtifactProperty("DefinitionUri", False, _s3_uri),
    "AWS::Serverless::StateMachine": ArtifactProperty("DefinitionUri", False, _s3_uri),
    "AWS::Lambda::Function": ArtifactProperty("Code", True, _code_location),
    "AWS::Lambda::LayerVersion": ArtifactProperty("Content", True, _code_location),
    "AWS::StepFunctions::StateMachine": ArtifactProperty("DefinitionS3Location", False, _s3_location),
    "AWS::ApiGateway::RestApi": ArtifactProperty("BodyS3Location", False, _s3_location),
    "AWS::ApiGatewayV2::Api": ArtifactProperty("BodyS3Location", False, _s3_location),
}
# Nested templates are packaged themselves, then uploaded; the property gets the template's URL.
NESTED_TEMPLATE_PROPERTIES = {
    "AWS::Serverless::Application": "Location",
    "AWS::CloudFormation::Stack": "TemplateURL",
}


# --- Templates -------------------------------------------------------------------------------------------
def load_template(path: Path) -> dict[str, Any]:
    """A CloudFormation/SAM template (JSON, or YAML with short-form tags such as !Ref) as plain data."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PlldbError(f"Cannot read template {path}: {exc.strerror}.", "Check the --template path.")
    try:
        data = parse_json_or_yaml(text)
    except Exception as exc:
        raise PlldbError(f"Template {path} is neither valid JSON nor YAML: {exc}")
    if not isinstance(data, dict) or not isinstance(data.get("Resources"), dict):
        raise PlldbError(f"Template {path} has no Resources section.")
    return data


# --- Zips ----------------------------------------------------------------------------------------------
def _included(path: Path) -> bool:
    return path.name not in EXCLUDED_NAMES and not path.name.endswith(EXCLUDED_SUFFIXES)


def _walk(directory: Path) -> Iterable[Path]:
    for entry in sorted(directory.iterdir(), key=lambda p: p.name):
        if not _included(entry):
            continue
        if entry.is_dir():
            yield from _walk(entry)
        elif entry.is_file():
            yield entry


def zip_directory(directory: Path) -> bytes:
    """A deterministic zip of a folder: sorted entries, fixed timestamps and permissions."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for file_path in _walk(directory):
            info = zipfile.ZipInfo(file_path.relative_to(directory).as_posix(), date_time=ZIP_TIMESTAMP)
            mode = 0o755 if os.access(file_path, os.X_OK) else 0o644
            info.external_attr = (stat.S_IFREG | mode) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, file_path.read_bytes())
    return buffer.getvalue()


def content_key(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- Packaging ---------------------------------------------------------------------------------------------
class Packager:
    """Uploads local artifacts referenced by a template and rewrites the template to point at S3."""

    def __init__(self, session: boto3.Session, bucket: str, on_event: EventCallback) -> None:
        self.s3 = session.client("s3")
        self.region = session.region_name or "us-east-1"
        self.bucket = bucket
        self.on_event = on_event
        self._packaging: set[Path] = set()

    def upload(self, data: bytes, description: str) -> str:
        """Put the bytes at their content hash (skipped when already there); returns the key."""
        key = content_key(data)
        try:
            self.s3.head_object(Bucket=self.bucket, Key=key)
        except botocore.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in {"404", "NoSuchKey", "NotFound"}:
                raise
            self.s3.put_object(Bucket=self.bucket, Key=key, Body=data)
            self.on_event(f"Uploaded {description} to s3://{self.bucket}/{key}")
        return key

    def template_url(self, key: str) -> str:
        return f"https://s3.{self.region}.amazonaws.com/{self.bucket}/{key}"

    def _local_path(self, value: Any, base: Path) -> Path | None:
        """The local file or folder a property points at, or None when it already points elsewhere."""
        if not isinstance(value, str) or "://" in value:
            return None
        path = (base / value).resolve()
        if not path.exists():
            raise PlldbError(
                f"{value!r} (relative to {base}) does not exist.", "Fix the path in the template."
            )
        return path

    def _zip_artifact(self, value: Any, base: Path, description: str) -> str | None:
        path = self._local_path(value, base)
        if path is None:
            return None
        data = path.read_bytes() if path.is_file() else zip_directory(path)
        return self.upload(data, description)

    def _file_artifact(self, value: Any, base: Path, description: str) -> str | None:
        path = self._local_path(value, base)
        if path is None:
            return None
        if not path.is_file():
            raise PlldbError(f"{description} {path} must be a file.")
        return self.upload(path.read_bytes(), description)

    def package(self, template: dict[str, Any], base: Path) -> dict[str, Any]:
        """Rewrite every local artifact path in the template (a copy) to its uploaded S3 location."""
        packaged = json.loads(json.dumps(template))
        globals_function = packaged.get("Globals", {}).get("Function", {})
        if isinstance(globals_function, dict) and "CodeUri" in globals_function:
            key = self._zip_artifact(globals_function["CodeUri"], base, "Globals CodeUri")
            if key is not None:
                globals_function["CodeUri"] = _s3_uri(self.bucket, key)
        for logical_id, resource in packaged["Resources"].items():
            if isinstance(resource, dict):
                self._package_resource(logical_id, resource, base, globals_function)
        return packaged

    def _package_resource(
        self, logical_id: str, resource: dict[str, Any], base: Path, globals_function: Any
    ) -> None:
        kind = resource.get("Type")
        properties = resource.setdefault("Properties", {})
        if not isinstance(properties, dict):
            return
        label = f"{logical_id} ({kind})"
        if kind in NESTED_TEMPLATE_PROPERTIES:
            name = NESTED_TEMPLATE_PROPERTIES[kind]
            if isinstance(properties.get(name), str):
                properties[name] = self._nested_template(properties[name], base, label)
            return
        artifact = ARTIFACT_PROPERTIES.get(str(kind))
        if artifact is None:
            return
        if kind == "AWS::Serverless::Function":
            uses_image = properties.get("PackageType") == "Image"
            if uses_image or "InlineCode" in properties:
                return
            has_global_code = isinstance(globals_function, dict) and "CodeUri" in globals_function
            if "CodeUri" not in properties and has_global_code:
                return
        value = properties.get(artifact.name, artifact.default)
        if artifact.zipped:
            key = self._zip_artifact(value, base, label)
        else:
            key = self._file_artifact(value, base, label)
        if key is not None:
            properties[artifact.name] = artifact.location(self.bucket, key)

    def _nested_template(self, location: str, base: Path, label: str) -> str:
        path = self._local_path(location, base)
        if path is None:
            return location
        if path in self._packaging:
            raise PlldbError(
                f"{label} includes itself through {path}.", "Remove the cycle of nested templates."
            )
        self._packaging.add(path)
        try:
            nested = self.package(load_template(path), path.parent)
        finally:
            self._packaging.discard(path)
        key = self.upload(template_text(nested).encode("utf-8"), f"{label} template")
        return self.template_url(key)


def template_text(template: dict[str, Any]) -> str:
    return json.dumps(template, indent=1, sort_keys=False)


def default_bucket(session: boto3.Session) -> str:
    account = session.client("sts").get_caller_identity()["Account"]
    return f"plldb-sam-artifacts-{account}-{session.region_name}"


def ensure_bucket(session: boto3.Session, bucket: str) -> None:
    s3 = session.client("s3")
    try:
        s3.head_bucket(Bucket=bucket)
        return
    except botocore.exceptions.ClientError as exc:
        if exc.response.get("Error", {}).get("Code") not in {"404", "NoSuchBucket", "NotFound"}:
            raise
    if session.region_name in (None, "us-east-1"):
        s3.create_bucket(Bucket=bucket)
    else:
        s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": session.region_name})


# --- Deploying ----------------------------------------------------------------------------------------------
def _error(exc: botocore.exceptions.ClientError) -> tuple[str, str]:
    error = exc.response.get("Error", {})
    return str(error.get("Code", "")), str(error.get("Message", exc))


def describe_stack(cloudformation: Any, stack_name: str) -> dict[str, Any] | None:
    try:
        return dict(cloudformation.describe_stacks(StackName=stack_name)["Stacks"][0])
    except botocore.exceptions.ClientError as exc:
        code, message = _error(exc)
        if code == "ValidationError" and "does not exist" in message:
            return None
        raise


class StackWatcher:
    """Reports a stack's new events (oldest first) until it leaves its *_IN_PROGRESS state."""

    def __init__(self, cloudformation: Any, stack_id: str, on_event: EventCallback) -> None:
        self.cloudformation = cloudformation
        self.stack_id = stack_id
        self.on_event = on_event
        self.seen: set[str] = set()
        self.failures: list[dict[str, Any]] = []

    def skip_existing(self) -> None:
        """Events of earlier operations are history; only report what happens from now on."""
        self.seen.update(event["EventId"] for event in self._events())

    def _events(self) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        paginator = self.cloudformation.get_paginator("describe_stack_events")
        for page in paginator.paginate(StackName=self.stack_id):
            events.extend(page["StackEvents"])
        return events

    def report(self) -> None:
        fresh = [event for event in self._events() if event["EventId"] not in self.seen]
        for event in reversed(fresh):
            self.seen.add(event["EventId"])
            status = event.get("ResourceStatus", "")
            reason = event.get("ResourceStatusReason") or ""
            line = f"{status:<28} {event.get('ResourceType', ''):<36} {event.get('LogicalResourceId', '')}"
            self.on_event(f"{line}  {reason}".rstrip())
            if status.endswith("_FAILED") and event.get("PhysicalResourceId") != self.stack_id:
                self.failures.append(event)

    def wait(self, timeout: float = WAIT_TIMEOUT_SECONDS) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            self.report()
            stack = describe_stack(self.cloudformation, self.stack_id)
            if stack is None:
                raise PlldbError(f"Stack {self.stack_id} disappeared while it was being deployed.")
            if not stack["StackStatus"].endswith("_IN_PROGRESS"):
                self.report()
                return stack
            if time.monotonic() > deadline:
                raise PlldbError(
                    f"Stack {stack['StackName']} is still {stack['StackStatus']} after {timeout:.0f} seconds."
                )
            time.sleep(POLL_SECONDS)

    def failure_message(self, stack: dict[str, Any]) -> str:
        name = stack["StackName"]
        status = stack["StackStatus"]
        cause = next((event for event in self.failures if event.get("ResourceStatusReason")), None)
        if cause is None:
            reason = stack.get("StackStatusReason") or "no reason was reported"
            return f"Deploying stack {name} failed ({status}): {reason}"
        return (
            f"Deploying stack {name} failed ({status}): resource {cause.get('LogicalResourceId')} "
            f"({cause.get('ResourceType')}) {cause.get('ResourceStatus')}: {cause.get('ResourceStatusReason')}"
        )


def _outputs(stack: dict[str, Any]) -> dict[str, str]:
    return {output["OutputKey"]: output["OutputValue"] for output in stack.get("Outputs") or []}


def _template_argument(packager: Packager, template: dict[str, Any]) -> dict[str, str]:
    body = template_text(template)
    if len(body.encode("utf-8")) <= TEMPLATE_BODY_LIMIT:
        return {"TemplateBody": body}
    key = packager.upload(body.encode("utf-8"), "template")
    return {"TemplateURL": packager.template_url(key)}


def deploy(
    session: boto3.Session,
    template_path: Path,
    stack_name: str,
    *,
    bucket: str | None = None,
    parameters: dict[str, str] | None = None,
    capabilities: Sequence[str] = DEFAULT_CAPABILITIES,
    on_event: EventCallback | None = None,
    timeout: float = WAIT_TIMEOUT_SECONDS,
) -> dict[str, str]:
    """Package and deploy a SAM/CloudFormation template; returns the stack's outputs.

    Creates the stack, or updates it (an update with nothing to change is a success). Raises PlldbError
    naming the failed resource and the reason when CloudFormation could not deploy it.
    """
    report = on_event or (lambda _line: None)
    template_path = Path(template_path)
    template = load_template(template_path)
    cloudformation = session.client("cloudformation")
    try:
        artifact_bucket = bucket or default_bucket(session)
        ensure_bucket(session, artifact_bucket)
        packager = Packager(session, artifact_bucket, report)
        packaged = packager.package(template, template_path.resolve().parent)
        arguments: dict[str, Any] = {
            "StackName": stack_name,
            "Capabilities": list(capabilities),
            "Parameters": [
                {"ParameterKey": key, "ParameterValue": str(value)}
                for key, value in (parameters or {}).items()
            ],
            **_template_argument(packager, packaged),
        }
        existing = describe_stack(cloudformation, stack_name)
        if existing is not None and existing["StackStatus"] in {"ROLLBACK_COMPLETE", "REVIEW_IN_PROGRESS"}:
            report(
                f"Stack {stack_name} is {existing['StackStatus']} and cannot be updated; deleting it first"
            )
            delete_stack(session, existing["StackId"], on_event=report, timeout=timeout)
            existing = None
        if existing is None:
            report(f"Creating stack {stack_name}")
            stack_id = cloudformation.create_stack(**arguments)["StackId"]
            watcher = StackWatcher(cloudformation, stack_id, report)
        else:
            watcher = StackWatcher(cloudformation, existing["StackId"], report)
            watcher.skip_existing()
            report(f"Updating stack {stack_name}")
            try:
                cloudformation.update_stack(**arguments)
            except botocore.exceptions.ClientError as exc:
                code, message = _error(exc)
                if code == "ValidationError" and "No updates are to be performed" in message:
                    report(f"Stack {stack_name} is up to date")
                    return _outputs(existing)
                raise
        stack = watcher.wait(timeout)
    except botocore.exceptions.ClientError as exc:
        code, message = _error(exc)
        raise PlldbError(f"Deploying stack {stack_name} failed: {code}: {message}")
    if stack["StackStatus"] in FAILED_STATUSES:
        raise PlldbError(watcher.failure_message(stack))
    return _outputs(stack)


def delete_stack(
    session: boto3.Session,
    stack_name: str,
    *,
    on_event: EventCallback | None = None,
    timeout: float = WAIT_TIMEOUT_SECONDS,
) -> None:
    """Delete a stack and wait until it is gone (a stack that does not exist is already deleted)."""
    report = on_event or (lambda _line: None)
    cloudformation = session.client("cloudformation")
    existing = describe_stack(cloudformation, stack_name)
    if existing is None:
        return
    watcher = StackWatcher(cloudformation, existing["StackId"], report)
    watcher.skip_existing()
    cloudformation.delete_stack(StackName=existing["StackId"])
    stack = watcher.wait(timeout)
    if stack["StackStatus"] != "DELETE_COMPLETE":
        raise PlldbError(watcher.failure_message(stack))


# --- Command line -------------------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    """`python -m plldb.localcloud.sam_deploy --template T --stack-name S`: deploy and print the outputs."""
    parser = argparse.ArgumentParser(prog="plldb-sam-deploy", description=__doc__)
    parser.add_argument("--template", required=True, type=Path, help="SAM or CloudFormation template")
    parser.add_argument("--stack-name", required=True)
    parser.add_argument("--bucket", help="artifact bucket (default: plldb-sam-artifacts-ACCOUNT-REGION)")
    parser.add_argument("--parameter", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--region")
    args = parser.parse_args(argv)
    parameters: dict[str, str] = {}
    for item in args.parameter:
        key, separator, value = item.partition("=")
        if not separator:
            parser.error(f"--parameter {item!r} must look like KEY=VALUE")
        parameters[key] = value
    session = boto3.Session(region_name=args.region or os.environ.get("AWS_REGION") or "us-east-1")
    try:
        outputs = deploy(
            session,
            args.template,
            args.stack_name,
            bucket=args.bucket,
            parameters=parameters,
            on_event=lambda line: print(line, file=sys.stderr),
        )
    except PlldbError as exc:
        print(f"Error: {exc.one_line()}", file=sys.stderr)
        return 1
    for key, value in outputs.items():
        print(f"{key}\t{value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
