"""What the local cloud's Lambda API tests share: the account, ARNs, a code package and the error of a call."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable
from typing import Any

import pytest
from botocore.exceptions import ClientError

ACCOUNT = "123456789012"
REGION = "us-east-1"


def code_zip() -> bytes:
    data = io.BytesIO()
    with zipfile.ZipFile(data, "w") as archive:
        archive.writestr("app.py", "def handle(event, context):\n    return event\n")
    return data.getvalue()


def function_arn(name: str, qualifier: str | None = None) -> str:
    return f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}" + (f":{qualifier}" if qualifier else "")


def error_of(call: Callable[[], Any]) -> dict[str, Any]:
    """The service's error for ``call`` as the client sees it: code, message and HTTP status."""
    with pytest.raises(ClientError) as failed:
        call()
    return {
        "Code": failed.value.response["Error"]["Code"],
        "Message": failed.value.response["Error"]["Message"],
        "Status": failed.value.response["ResponseMetadata"]["HTTPStatusCode"],
    }
