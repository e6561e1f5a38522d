"""An application on a moto server, for the tests of plldb's instrumentation and of the helper stack.

A moto server (with the local cloud's extensions of it) on an ephemeral port, and an application on it
as a team would deploy it: execution roles, layers, functions with any configuration, aliases and
versions, CloudFormation stacks with nested stacks. Snapshots say exactly what a function and its role
look like, so a test can compare before and after.
"""

from __future__ import annotations

import contextlib
import io
import json
import uuid
import zipfile
from collections.abc import Iterator
from typing import Any

import boto3
from moto.server import ThreadedMotoServer

from plldb.localcloud import moto_extensions
from tests.cloud_state import VOLATILE_FIELDS, pointed_at

REGION = "us-east-1"
ACCOUNT_ID = "123456789012"  # moto's account
LAMBDA_TRUST = {
    "Version": "2012-10-17",
    "Statement": [
        {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}
    ],
}


@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    """A moto server on 127.0.0.1; this process's boto3 talks to it (and only to it) meanwhile."""
    moto_extensions.install()  # among others: atomic conditional writes, versions and aliases as Lambda has them
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    variables = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
    }
    try:
        with pointed_at(variables):
            yield endpoint
    finally:
        server.stop()


def code_zip(source: str = "def handler(event, context):\n    return event\n") -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("app.py", source)
    return buffer.getvalue()


CODE = code_zip()


class App:
    """A team's application: roles, layers, functions and stacks (names unique per instance)."""

    def __init__(self, session: boto3.Session | None = None) -> None:
        self.session = session or boto3.Session(region_name=REGION)
        self.lambda_client = self.session.client("lambda")
        self.iam = self.session.client("iam")
        self.cloudformation = self.session.client("cloudformation")
        self.s3 = self.session.client("s3")
        self.suffix = uuid.uuid4().hex[:8]
        self.layers = [
            self.lambda_client.publish_layer_version(
                LayerName=f"app-{self.suffix}-layer{i}", Content={"ZipFile": CODE}
            )["LayerVersionArn"]
            for i in range(5)
        ]
        self._bucket: str | None = None

    # --- Roles ------------------------------------------------------------------------------------------
    def new_role(self) -> str:
        name = f"app-role-{uuid.uuid4().hex[:10]}"
        role = self.iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(LAMBDA_TRUST))["Role"]
        return str(role["Arn"])

    def role_id(self, role_arn: str) -> str:
        return str(self.iam.get_role(RoleName=role_arn.rsplit("/", 1)[-1])["Role"]["RoleId"])

    def attached_policies(self, role_arn: str) -> list[str]:
        page = self.iam.list_attached_role_policies(RoleName=role_arn.rsplit("/", 1)[-1])
        return sorted(p["PolicyArn"] for p in page["AttachedPolicies"])

    def role_tags(self, role_arn: str) -> dict[str, str]:
        tags = self.iam.list_role_tags(RoleName=role_arn.rsplit("/", 1)[-1])["Tags"]
        return {tag["Key"]: tag["Value"] for tag in tags}

    # --- Functions ------------------------------------------------------------------------------------
    def create_function(
        self,
        *,
        role: str,
        variables: dict[str, str] | None = None,
        layers: list[str] | None = None,
        timeout: int = 3,
        runtime: str = "python3.13",
        name: str | None = None,
    ) -> str:
        name = name or f"app-{self.suffix}-{uuid.uuid4().hex[:10]}"
        arguments: dict[str, Any] = {
            "FunctionName": name,
            "Runtime": runtime,
            "Role": role,
            "Handler": "app.handler",
            "Code": {"ZipFile": CODE},
            "Timeout": timeout,
            "MemorySize": 256,
        }
        if variables is not None:
            arguments["Environment"] = {"Variables": variables}
        if layers:
            arguments["Layers"] = layers
        self.lambda_client.create_function(**arguments)
        return name

    def configuration(self, name: str, qualifier: str | None = None) -> dict[str, Any]:
        arguments = {"FunctionName": name, **({"Qualifier": qualifier} if qualifier else {})}
        config = dict(self.lambda_client.get_function_configuration(**arguments))
        config.pop("ResponseMetadata", None)
        return config

    def variables(self, name: str, qualifier: str | None = None) -> dict[str, str]:
        return dict((self.configuration(name, qualifier).get("Environment") or {}).get("Variables") or {})

    def aliases(self, name: str) -> dict[str, tuple[str, dict[str, float]]]:
        found = self.lambda_client.list_aliases(FunctionName=name)["Aliases"]
        return {
            alias["Name"]: (
                alias["FunctionVersion"],
                dict((alias.get("RoutingConfig") or {}).get("AdditionalVersionWeights") or {}),
            )
            for alias in found
        }

    def versions(self, name: str) -> dict[str, str]:
        found = self.lambda_client.list_versions_by_function(FunctionName=name)["Versions"]
        return {v["Version"]: v.get("Description", "") for v in found if v["Version"] != "$LATEST"}

    def snapshot(self, name: str) -> dict[str, Any]:
        """Everything plldb may touch: the configuration, its aliases and versions, the role's policies and tags."""
        config = {k: v for k, v in self.configuration(name).items() if k not in VOLATILE_FIELDS}
        return {
            "configuration": config,
            "aliases": self.aliases(name),
            "versions": self.versions(name),
            "rolePolicies": self.attached_policies(config["Role"]),
            "roleTags": self.role_tags(config["Role"]),
        }

    # --- Stacks ------------------------------------------------------------------------------------------
    @property
    def bucket(self) -> str:
        if self._bucket is None:
            self._bucket = f"app-templates-{self.suffix}"
            self.s3.create_bucket(Bucket=self._bucket)
        return self._bucket

    @staticmethod
    def function_resource(role: str, variables: dict[str, str] | None = None) -> dict[str, Any]:
        properties: dict[str, Any] = {
            "Runtime": "python3.13",
            "Handler": "index.handler",
            "Role": role,
            "Timeout": 3,
            "Code": {"ZipFile": "def handler(event, context):\n    return event\n"},
        }
        if variables:
            properties["Environment"] = {"Variables": variables}
        return {"Type": "AWS::Lambda::Function", "Properties": properties}

    def create_stack(self, resources: dict[str, Any], nested: dict[str, dict[str, Any]] | None = None) -> str:
        """A stack with these resources, and nested stacks (logical id -> their resources); its StackId."""
        for logical_id, nested_resources in (nested or {}).items():
            key = f"{uuid.uuid4().hex}.json"
            self.s3.put_object(
                Bucket=self.bucket, Key=key, Body=json.dumps({"Resources": nested_resources}).encode()
            )
            resources[logical_id] = {
                "Type": "AWS::CloudFormation::Stack",
                "Properties": {"TemplateURL": f"https://s3.amazonaws.com/{self.bucket}/{key}"},
            }
        name = f"app-{self.suffix}-{uuid.uuid4().hex[:6]}"
        created = self.cloudformation.create_stack(
            StackName=name, TemplateBody=json.dumps({"Resources": resources})
        )
        return str(created["StackId"])

    def stack_functions(self, stack_id: str) -> dict[str, str]:
        """Logical path -> physical name of every function of the stack and its nested stacks."""
        from plldb.instrumentation import stacks

        return {f.path: f.function_name for f in stacks.list_stack_functions(self.cloudformation, stack_id)}
