"""What reaches a function besides its unqualified ARN, and what a debugging pause does to it.

plldb redirects `$LATEST` and every alias; it cannot redirect traffic that names a numbered version
(an event source mapping or a permission on ``function:NAME:3``), and it leaves an alias with
provisioned concurrency alone unless asked (moving it makes Lambda provision the new version). Queues
and streams keep their own clocks while a developer sits at a breakpoint. Each finding becomes one
line the developer reads when attach starts; none of it changes anything.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from plldb.lambda_common import error_code

MAX_VERSIONS_CHECKED = 5  # the most recent numbered versions looked at for traffic of their own
STREAM_SOURCES = {"kinesis": "Kinesis stream", "dynamodb": "DynamoDB stream", "kafka": "Kafka topic"}


def provisioned_aliases(lambda_client: Any, function_name: str) -> dict[str, int]:
    """Aliases with provisioned concurrency, and how much (one paginated call per function)."""
    found: dict[str, int] = {}
    paginator = lambda_client.get_paginator("list_provisioned_concurrency_configs")
    for page in paginator.paginate(FunctionName=function_name):
        for config in page.get("ProvisionedConcurrencyConfigs", []):
            qualifier = str(config.get("FunctionArn", "")).rsplit(":", 1)[-1]
            found[qualifier] = int(config.get("RequestedProvisionedConcurrentExecutions") or 0)
    return found


def provisioned_note(alias: str, amount: int) -> str:
    return (
        f"alias {alias} has provisioned concurrency ({amount}), so plldb leaves it on its version and its "
        "traffic keeps running the deployed code; attach with --include-provisioned to redirect it too "
        "(Lambda then provisions that many environments of plldb's version, which takes minutes and is "
        "billed as provisioned concurrency, and again when plldb puts the alias back)"
    )


def event_source_mappings(lambda_client: Any) -> dict[str, list[dict[str, Any]]]:
    """Every event source mapping of the account and region, by the unqualified function ARN it feeds.

    One listing for the whole stack (not one per function): Lambda's control plane allows 15 requests a
    second per account.
    """
    found: dict[str, list[dict[str, Any]]] = {}
    try:
        for page in lambda_client.get_paginator("list_event_source_mappings").paginate():
            for mapping in page.get("EventSourceMappings", []):
                function_arn = ":".join(str(mapping.get("FunctionArn", "")).split(":")[:7])
                found.setdefault(function_arn, []).append(mapping)
    except ClientError as exc:
        if error_code(exc) != "AccessDeniedException":
            raise
    return found


def event_source_notes(mappings: Iterable[Mapping[str, Any]], sqs: Any = None) -> list[str]:
    """What a pause at a breakpoint does to the queues and streams that feed the function."""
    notes: list[str] = []
    for mapping in mappings:
        source = str(mapping.get("EventSourceArn") or "")
        service = source.split(":")[2] if source.count(":") >= 2 else ""
        if service == "sqs":
            timeout = _visibility_timeout(sqs, source)
            when = f" ({timeout} s)" if timeout is not None else ""
            notes.append(
                f"fed by SQS queue {source.rsplit(':', 1)[-1]}: a pause longer than its visibility "
                f"timeout{when} makes SQS deliver the message again"
            )
        elif service in STREAM_SOURCES:
            name = source.split("/")[1] if "/" in source else source
            notes.append(
                f"fed by {STREAM_SOURCES[service]} {name}: its shard waits while you pause, and records "
                "older than the mapping's maximum record age are skipped"
            )
    return sorted(set(notes))


def numbered_version_notes(
    lambda_client: Any,
    function_name: str,
    function_arn: str,
    aliased: set[str],
    mappings: Iterable[Mapping[str, Any]],
) -> list[str]:
    """The most recent numbered versions with traffic of their own (event source mappings, permissions)."""
    versions = [
        str(v["Version"])
        for page in lambda_client.get_paginator("list_versions_by_function").paginate(
            FunctionName=function_name
        )
        for v in page.get("Versions", [])
        if str(v.get("Version", "")).isdigit() and str(v["Version"]) not in aliased
    ]
    by_version: dict[str, list[str]] = {}
    for mapping in mappings:
        qualifier = str(mapping.get("FunctionArn", "")).split(":")[7:8]
        if qualifier and qualifier[0].isdigit():
            by_version.setdefault(qualifier[0], []).append(str(mapping.get("EventSourceArn")))
    notes = []
    for version in sorted(versions, key=int)[-MAX_VERSIONS_CHECKED:]:
        sources = by_version.get(version, []) + _policy_principals(lambda_client, function_name, version)
        if sources:
            notes.append(
                f"version {version} receives traffic of its own ({', '.join(sorted(set(sources)))}); plldb "
                "cannot redirect a numbered version, so that traffic keeps running the deployed code"
            )
    return notes


def vpc_note(config: Mapping[str, Any]) -> str | None:
    """A function in a VPC needs a route to the services the layer talks to."""
    vpc = (config.get("VpcConfig") or {}).get("VpcId")
    if not vpc or not (config.get("VpcConfig") or {}).get("SubnetIds"):
        return None
    return (
        f"it runs in {vpc}: to reach plldb's helper stack its subnets need a NAT gateway, or VPC endpoints for "
        "DynamoDB and S3 (gateway) and STS and Lambda (interface); without them each invocation fails with "
        "a PlldbLayerError naming the service it could not reach"
    )


def _policy_principals(lambda_client: Any, function_name: str, version: str) -> list[str]:
    try:
        policy = json.loads(lambda_client.get_policy(FunctionName=function_name, Qualifier=version)["Policy"])
    except ClientError as exc:
        if error_code(exc) in ("ResourceNotFoundException", "AccessDeniedException"):
            return []
        raise
    principals: list[str] = []
    for statement in policy.get("Statement", []):
        principal = statement.get("Principal")
        if isinstance(principal, dict):
            principals.extend(
                str(p)
                for value in principal.values()
                for p in (value if isinstance(value, list) else [value])
            )
        elif principal:
            principals.append(str(principal))
    return principals


def _visibility_timeout(sqs: Any, queue_arn: str) -> int | None:
    """The queue's visibility timeout, when the developer may read it (else None: the note still holds)."""
    parts = queue_arn.split(":")
    if len(parts) < 6 or sqs is None:
        return None
    try:
        url = sqs.get_queue_url(QueueName=parts[5], QueueOwnerAWSAccountId=parts[4])["QueueUrl"]
        attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["VisibilityTimeout"])
        return int(attributes["Attributes"]["VisibilityTimeout"])
    except (ClientError, BotoCoreError, KeyError, ValueError):
        return None
