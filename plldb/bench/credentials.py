"""Credentials at rest: does anything a design stores hold an execution role's temporary credentials?

Every temporary credential the local cloud issued (moto's STS: each Lambda environment's role session,
each helper function's) is known to the benchmark's process. After a run, every item of the design's
tables and every object of its buckets is searched for any issued secret access key or session token.
"""

from __future__ import annotations

import json
from typing import Any

import boto3


def issued_secrets() -> set[str]:
    """Every secret access key and session token the local cloud's STS has issued."""
    from moto.sts.models import sts_backends

    secrets: set[str] = set()
    for backend in sts_backends.values():
        for partition in backend.values():
            for role in partition.assumed_roles:
                secrets.update(value for value in (role.secret_access_key, role.session_token) if value)
    return secrets


def stack_storage(session: boto3.Session, stack_name: str) -> tuple[list[str], list[str]]:
    """The DynamoDB tables and S3 buckets a stack created."""
    resources = session.client("cloudformation").describe_stack_resources(StackName=stack_name)[
        "StackResources"
    ]
    tables = [r["PhysicalResourceId"] for r in resources if r["ResourceType"] == "AWS::DynamoDB::Table"]
    buckets = [r["PhysicalResourceId"] for r in resources if r["ResourceType"] == "AWS::S3::Bucket"]
    return sorted(tables), sorted(buckets)


def scan(session: boto3.Session, tables: list[str], buckets: list[str]) -> dict[str, Any]:
    """Items and objects holding an issued credential, per table and bucket."""
    secrets = issued_secrets()
    dynamodb = session.client("dynamodb")
    s3 = session.client("s3")
    report: dict[str, Any] = {"tables": {}, "buckets": {}}
    for table in tables:
        items = holding = 0
        for page in dynamodb.get_paginator("scan").paginate(TableName=table):
            for item in page.get("Items", []):
                items += 1
                text = json.dumps(item)
                holding += any(secret in text for secret in secrets)
        report["tables"][table] = {"items": items, "holding_credentials": holding}
    for bucket in buckets:
        objects = holding = 0
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for entry in page.get("Contents", []):
                objects += 1
                body = (
                    s3.get_object(Bucket=bucket, Key=entry["Key"])["Body"].read().decode("utf-8", "replace")
                )
                holding += any(secret in body for secret in secrets)
        report["buckets"][bucket] = {"objects": objects, "holding_credentials": holding}
    report["stored_with_credentials"] = sum(
        entry["holding_credentials"] for kind in ("tables", "buckets") for entry in report[kind].values()
    )
    report["issued_credentials_searched"] = len(secrets)
    return report
