"""S3: bucket policies in CloudFormation; an object PUT keeps its bytes whatever its Content-Type; a presigned
URL stops working when it expires.

Gap: AWS::S3::BucketPolicy was skipped ("No Moto CloudFormation support"). It is created, updated and
deleted through S3's PutBucketPolicy and DeleteBucketPolicy, as the CloudFormation template reference
describes the type: ``Bucket`` "Update requires: Replacement", ``PolicyDocument`` "Update requires: No
interruption"; with ``DeletionPolicy`` Delete (the default) the policy is removed when the stack is
deleted, with Retain it stays. The reference documents no return value, so ``Ref`` gives the name
CloudFormation generates for the resource and ``Fn::GetAtt`` has no attribute.

Gap: moto evaluated bucket policies on object requests, wrongly: a statement whose ``Condition`` did not
hold denied the request (so the common ``aws:SecureTransport: "false"`` Deny statement denied everything).
The local cloud evaluates no IAM policy (docs/localcloud.md, "IAM is not enforced"); a bucket policy is
stored and returned by GetBucketPolicy, and decides no request.

Gap: a PUT whose Content-Type is a form type (``application/x-www-form-urlencoded``, what
``urllib.request`` sends with data by default) was parsed as a form by moto's web server and stored
empty. S3 stores the request body as the object, whatever the type.

Gap: moto serves a presigned URL whatever its age. S3 refuses a Signature Version 4 presigned request
once ``X-Amz-Date`` plus ``X-Amz-Expires`` seconds has passed (and a Signature Version 2 one once its
``Expires`` epoch has passed) with 403 AccessDenied "Request has expired", naming the expiry and the
server's time ("Sharing objects with presigned URLs", Amazon S3 user guide: "the URL ... expires
at the time that you specify"; the error document as S3 returns it). The signature itself is not
verified (moto does not verify signatures).
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlparse

from moto.core.common_models import CloudFormationModel
from moto.s3 import models as s3_models
from moto.s3 import responses as s3_responses
from moto.s3.exceptions import MissingBucket
from moto.utilities.utils import get_partition

from plldb.localcloud.moto_extensions.core import Properties, UpdatableModel, original, patch

_ISO = "%Y-%m-%dT%H:%M:%SZ"


def expiry(query: dict[str, list[str]]) -> tuple[float, str | None] | None:
    """(epoch when the presigned request expires, its X-Amz-Expires) or None when it is not presigned."""
    try:
        if "X-Amz-Date" in query and "X-Amz-Expires" in query:
            signed = datetime.strptime(query["X-Amz-Date"][0], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
            seconds = query["X-Amz-Expires"][0]
            return signed.timestamp() + int(seconds), seconds
        if "Expires" in query and ("Signature" in query or "AWSAccessKeyId" in query):
            return float(query["Expires"][0]), None
    except ValueError:
        return None
    return None


def expired_response(
    expires_at: float, expires_in: str | None, now: float
) -> tuple[int, dict[str, str], str]:
    extra = f"<X-Amz-Expires>{expires_in}</X-Amz-Expires>" if expires_in is not None else ""
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        "<Error><Code>AccessDenied</Code><Message>Request has expired</Message>"
        f"{extra}<Expires>{datetime.fromtimestamp(expires_at, UTC).strftime(_ISO)}</Expires>"
        f"<ServerTime>{datetime.fromtimestamp(now, UTC).strftime(_ISO)}</ServerTime>"
        f"<RequestId>{uuid.uuid4().hex[:16].upper()}</RequestId><HostId>local</HostId></Error>"
    )
    return 403, {"Content-Type": "application/xml"}, body


def key_response(self: Any, request: Any, full_url: str) -> Any:
    found = expiry(parse_qs(urlparse(full_url).query, keep_blank_values=True))
    now = time.time()
    if found is not None and now > found[0]:
        return expired_response(found[0], found[1], now)
    return original(s3_responses.S3Response, "_key_response")(self, request, full_url)


def key_response_raw_body(self: Any, request: Any, full_url: str, headers: Any) -> Any:
    if request.method == "PUT" and hasattr(request, "get_data"):
        request.get_data(cache=True, parse_form_data=False)  # the body is the object, not a form
    return original(s3_responses.S3Response, "key_response")(self, request, full_url, headers)


class BucketPolicy(UpdatableModel, CloudFormationModel):
    """AWS::S3::BucketPolicy. Ref = the name CloudFormation generated for it (no documented return value)."""

    RESOURCE_TYPE = "AWS::S3::BucketPolicy"
    PHYSICAL_ID = "physical_name"

    def __init__(self, physical_name: str, bucket: str) -> None:
        self.physical_name = physical_name
        self.bucket = bucket

    @staticmethod
    def _backend(account_id: str, region_name: str) -> Any:
        return s3_models.s3_backends[account_id][get_partition(region_name)]

    @staticmethod
    def _document(properties: Properties) -> bytes:
        document = properties["PolicyDocument"]
        text = document if isinstance(document, str) else json.dumps(document)
        return text.encode("utf-8")

    @classmethod
    def _create(
        cls, resource_name: str, properties: Properties, account_id: str, region_name: str
    ) -> BucketPolicy:
        bucket = str(properties["Bucket"])
        cls._backend(account_id, region_name).put_bucket_policy(bucket, cls._document(properties))
        return cls(resource_name, bucket)

    def _needs_replacement(self, properties: Properties, account_id: str, region_name: str) -> bool:
        return str(properties["Bucket"]) != self.bucket

    def _update_in_place(self, properties: Properties, account_id: str, region_name: str) -> None:
        self._backend(account_id, region_name).put_bucket_policy(self.bucket, self._document(properties))

    def delete(self, account_id: str, region_name: str) -> None:
        backend = self._backend(account_id, region_name)
        try:
            backend.delete_bucket_policy(self.bucket)
        except MissingBucket:
            pass  # the bucket went first (it is deleted with the stack too): so did its policy


def no_policy_decides(self: Any, action: str, resource: str) -> Any:
    from moto.iam.access_control import PermissionResult

    return PermissionResult.NEUTRAL


def install() -> None:
    patch(s3_models.FakeBucket, "get_permission", no_policy_decides)
    patch(s3_responses.S3Response, "key_response", key_response_raw_body)
    patch(s3_responses.S3Response, "_key_response", key_response)
