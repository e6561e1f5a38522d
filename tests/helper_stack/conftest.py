"""Fixtures for the helper stack's handler tests: a moto server, the stack's resources, and API Gateway.

The handlers are called directly with realistic API Gateway events and invocation payloads. Each gets
the environment the template gives its function (so a handler that needs a variable its function lacks
fails here), and its own clients. The tables are created from the template's own definitions, and the
management API (post_to_connection, GetConnection) is a small HTTP server playing API Gateway, reached
through the product's PLLDB_EXECUTE_API_ENDPOINT mechanism.

The local cloud does not enforce IAM, so every AWS call each handler makes in these tests is recorded
and checked against its role's policy in the template (tests/security_iam.py): a handler that calls
something its role does not allow fails the test that made it call.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote

import boto3
import pytest
from botocore.awsrequest import AWSResponse
from cfn_flip import load_yaml
from moto_app import ACCOUNT_ID, REGION, App, code_zip, moto_server
from security_iam import CallRecorder, Deployment, Names, Principal, denied_calls

from plldb import protocol
from plldb.bootstrap import packaging
from plldb.bootstrap.cloudformation.handlers.common import Resources, from_item, to_attribute_values

API_ID = "h4testapi1"
STAGE = "plldb"
ROLE_OF_FUNCTION = {
    "RoutesFunction": "PLLDBRoutesRole",
    "DispatcherFunction": "PLLDBDispatcherRole",
    "ManagerFunction": "PLLDBManagerRole",
}


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    with moto_server() as endpoint:
        yield endpoint


# --- API Gateway's management API -------------------------------------------------------------------
@dataclass
class Posted:
    connection_id: str
    message: dict[str, Any]


@dataclass
class ManagementApi:
    """Plays API Gateway's @connections API: POST a message, GET the connection's status (ConnectedAt,
    LastActiveAt, Identity.SourceIp), 410 GoneException for a closed connection, 403 without a SigV4
    signature (API Gateway Developer Guide, "Use @connections commands in your backend service",
    apigateway-how-to-call-websocket-api-connections.html; GetConnection in the Management API reference)."""

    server: ThreadingHTTPServer
    posts: list[Posted] = field(default_factory=list)
    checked: list[str] = field(default_factory=list)  # GetConnection calls, by connection id
    gone: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def messages(self, connection_id: str) -> list[dict[str, Any]]:
        with self.lock:
            return [p.message for p in self.posts if p.connection_id == connection_id]

    def go(self, connection_id: str) -> None:
        """The connection closes: API Gateway answers 410 for it from now on."""
        with self.lock:
            self.gone.add(connection_id)


def _management_handler(api_ref: list[ManagementApi]) -> type[BaseHTTPRequestHandler]:
    prefix = f"/{API_ID}/{STAGE}/@connections/"

    class Handler(BaseHTTPRequestHandler):
        def _connection(self) -> str | None:
            if not self.path.startswith(prefix) or "Authorization" not in self.headers:
                self._reply(403, "ForbiddenException", {"message": "Forbidden"})
                return None
            return unquote(self.path[len(prefix) :])

        def do_POST(self) -> None:
            api = api_ref[0]
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            connection_id = self._connection()
            if connection_id is None:
                return
            if connection_id in api.gone:
                self._reply(410, "GoneException", {"message": ""})
                return
            with api.lock:
                api.posts.append(Posted(connection_id, json.loads(body)))
            self._reply(200, None, None)

        def do_GET(self) -> None:
            api = api_ref[0]
            connection_id = self._connection()
            if connection_id is None:
                return
            with api.lock:
                api.checked.append(connection_id)
            if connection_id in api.gone:
                self._reply(410, "GoneException", {"message": ""})
                return
            now = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
            self._reply(
                200,
                None,
                {"ConnectedAt": now, "LastActiveAt": now, "Identity": {"SourceIp": "192.0.2.10"}},
            )

        def _reply(self, status: int, error_type: str | None, body: Any) -> None:
            data = b"" if body is None else json.dumps(body).encode()
            self.send_response(status)
            if error_type:
                self.send_header("x-amzn-ErrorType", error_type)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture(scope="module")
def management_api() -> Iterator[ManagementApi]:
    holder: list[ManagementApi] = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _management_handler(holder))
    api = ManagementApi(server)
    holder.append(api)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield api
    finally:
        server.shutdown()
        server.server_close()


# --- The helper stack -----------------------------------------------------------------------------------
def template() -> dict[str, Any]:
    return load_yaml(packaging.template_body())


def create_table_from_template(dynamodb: Any, logical_id: str, name: str) -> None:
    """Create a table exactly as the template declares it (keys, TTL)."""
    properties = template()["Resources"][logical_id]["Properties"]
    dynamodb.create_table(
        TableName=name,
        AttributeDefinitions=[dict(a) for a in properties["AttributeDefinitions"]],
        KeySchema=[dict(k) for k in properties["KeySchema"]],
        BillingMode=properties["BillingMode"],
    )
    ttl = properties.get("TimeToLiveSpecification")
    if ttl:
        dynamodb.update_time_to_live(
            TableName=name,
            TimeToLiveSpecification={"AttributeName": ttl["AttributeName"], "Enabled": bool(ttl["Enabled"])},
        )


@dataclass
class Helper:
    """The helper stack's resources on moto, and one Resources per function, as deployed."""

    deployment: Deployment
    session: boto3.Session
    management: ManagementApi
    routes: Resources
    dispatcher: Resources
    manager: Resources
    recorders: dict[str, CallRecorder]
    names: Names
    manager_invocations: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    @property
    def dynamodb(self) -> Any:
        return self.session.client("dynamodb")

    @property
    def stack_name(self) -> str:
        return self.deployment.stack_name

    @property
    def stack_id(self) -> str:
        return self.deployment.stack_id

    @property
    def tables(self) -> dict[str, str]:
        return {
            logical: self.deployment.physical_name(logical)
            for logical in ("PLLDBSessions", "PLLDBConnections", "PLLDBStackLocks", "PLLDBInvocations")
        }

    @property
    def bucket(self) -> str:
        return self.deployment.physical_name("PayloadBucket")

    @property
    def layer_version_arn(self) -> str:
        return self.deployment.ref("DebuggerLayer")

    @property
    def policy_arn(self) -> str:
        return self.deployment.ref("InstrumentedFunctionPolicy")

    @property
    def dispatcher_arn(self) -> str:
        return self.deployment.get_att("DispatcherFunction", "Arn")

    # --- Items -----------------------------------------------------------------------------------------
    def item(self, logical_table: str, **key: str) -> dict[str, Any] | None:
        response = self.dynamodb.get_item(
            TableName=self.tables[logical_table],
            Key={name: {"S": value} for name, value in key.items()},
            ConsistentRead=True,
        )
        return from_item(response.get("Item"))

    def session_item(self, session_id: str) -> dict[str, Any] | None:
        return self.item("PLLDBSessions", SessionId=session_id)

    def lock_item(self, stack_id: str) -> dict[str, Any] | None:
        return self.item("PLLDBStackLocks", StackId=stack_id)

    def invocation_item(self, caller: str, delivery_id: str) -> dict[str, Any] | None:
        return self.item("PLLDBInvocations", Caller=caller, DeliveryId=delivery_id)

    def put(self, logical_table: str, item: dict[str, Any]) -> None:
        self.dynamodb.put_item(TableName=self.tables[logical_table], Item=to_attribute_values(item))

    def update_session(self, session_id: str, **attributes: Any) -> None:
        """Change a session behind the handlers' back (time passing, a crash)."""
        names = {f"#a{i}": name for i, name in enumerate(attributes)}
        values = to_attribute_values({f":v{i}": value for i, value in enumerate(attributes.values())})
        self.dynamodb.update_item(
            TableName=self.tables["PLLDBSessions"],
            Key={protocol.A_SESSION_ID: {"S": session_id}},
            UpdateExpression="SET " + ", ".join(f"#a{i} = :v{i}" for i in range(len(attributes))),
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=values,
        )

    def snapshot(self) -> dict[str, list[dict[str, Any]]]:
        """Every item of the four tables: what a refusal must leave unchanged."""
        found = {}
        for logical, table in self.tables.items():
            items = self.dynamodb.scan(TableName=table, ConsistentRead=True)["Items"]
            found[logical] = sorted(
                (from_item(item) or {} for item in items),
                key=lambda i: json.dumps(i, sort_keys=True, default=str),
            )
        return found

    def handed_to_manager(self) -> list[tuple[str, dict[str, Any]]]:
        """(function that asked, payload) of every asynchronous manager invocation so far, then forgets them."""
        handed, self.manager_invocations[:] = list(self.manager_invocations), []
        return handed

    def refused_calls(self) -> list[str]:
        """The AWS calls the handlers made since last asked that their roles' policies do not allow."""
        refused = []
        for function, recorder in self.recorders.items():
            role = ROLE_OF_FUNCTION[function]
            principal = Principal(role, self.deployment.role_policies(role))
            refused += [
                f"{function}: {line}"
                for line in denied_calls(
                    recorder.take(), principal, self.names, self.deployment.bucket_policies()
                )
            ]
        return refused


def _short_circuit_manager_invocations(helper_ref: list[Helper], function: str, client: Any) -> None:
    """The manager's asynchronous invocations are recorded (with their real parameters), not run: tests
    run the manager themselves with what was handed to it."""

    def record(params: dict[str, Any], **_: Any) -> None:
        helper = helper_ref[0]
        assert params["InvocationType"] == "Event"
        assert params["FunctionName"] == helper.deployment.ref("ManagerFunction")
        helper.manager_invocations.append((function, json.loads(params["Payload"])))

    def accepted(**_: Any) -> tuple[AWSResponse, dict[str, Any]]:
        return AWSResponse("https://lambda.invalid", 202, {}, None), {"StatusCode": 202}

    client.meta.events.register("before-parameter-build.lambda.Invoke", record)
    client.meta.events.register("before-call.lambda.Invoke", accepted)


@pytest.fixture(scope="module")
def helper(moto_endpoint: str, management_api: ManagementApi) -> Helper:
    session = boto3.Session(region_name=REGION)
    suffix = uuid.uuid4().hex[:8]
    stack_name = f"plldb-{suffix}"
    stack_id = session.client("cloudformation").create_stack(
        StackName=stack_name, TemplateBody=json.dumps({"Resources": {"Topic": {"Type": "AWS::SNS::Topic"}}})
    )["StackId"]
    tables = {
        logical: f"{stack_name}-{logical}"
        for logical in ("PLLDBSessions", "PLLDBConnections", "PLLDBStackLocks", "PLLDBInvocations")
    }
    dynamodb = session.client("dynamodb")
    for logical, name in tables.items():
        create_table_from_template(dynamodb, logical, name)
    bucket = f"{stack_name}-payloadbucket"
    session.client("s3").create_bucket(Bucket=bucket)
    layer_arn = session.client("lambda").publish_layer_version(
        LayerName=f"{stack_name}-debugger", Content={"ZipFile": code_zip()}
    )["LayerVersionArn"]
    deployment = Deployment(
        template(),
        stack_name=stack_name,
        account=ACCOUNT_ID,
        region=REGION,
        existing_stack_id=stack_id,
        overrides={
            **tables,
            "PayloadBucket": bucket,
            "DebuggerLayer": layer_arn,
            "WebSocketApi": API_ID,
            "RoutesFunction": f"{stack_name}-RoutesFunction",
            "DispatcherFunction": f"{stack_name}-DispatcherFunction",
            "ManagerFunction": f"{stack_name}-ManagerFunction",
        },
    )
    policy = session.client("iam").create_policy(
        PolicyName=deployment.physical_name("InstrumentedFunctionPolicy"),
        Path="/plldb/",
        PolicyDocument=json.dumps(deployment.managed_policy("InstrumentedFunctionPolicy")),
    )["Policy"]["Arn"]
    assert policy == deployment.ref("InstrumentedFunctionPolicy")
    names = Names(
        region=REGION,
        account=ACCOUNT_ID,
        hash_keys={
            tables["PLLDBSessions"]: protocol.A_SESSION_ID,
            tables["PLLDBConnections"]: protocol.A_CONNECTION_ID,
            tables["PLLDBStackLocks"]: protocol.A_STACK_ID,
            tables["PLLDBInvocations"]: protocol.A_CALLER,
        },
        api_id=API_ID,
        stage=STAGE,
    )
    holder: list[Helper] = []
    resources: dict[str, Resources] = {}
    recorders: dict[str, CallRecorder] = {}
    for function in ROLE_OF_FUNCTION:
        environ = {
            **deployment.function_environment(function),
            "AWS_REGION": REGION,
            protocol.EXECUTE_API_ENDPOINT_VARIABLE: management_api.endpoint,
        }
        handler_resources = Resources(environ).warm_up(
            "dynamodb", "s3", "lambda_client", "cloudformation", "iam", "connections"
        )
        recorder = CallRecorder()
        for client in ("dynamodb", "s3", "lambda_client", "cloudformation", "iam", "connections"):
            recorder.attach(getattr(handler_resources, client))
        _short_circuit_manager_invocations(holder, function, handler_resources.lambda_client)
        resources[function], recorders[function] = handler_resources, recorder
    helper = Helper(
        deployment=deployment,
        session=session,
        management=management_api,
        routes=resources["RoutesFunction"],
        dispatcher=resources["DispatcherFunction"],
        manager=resources["ManagerFunction"],
        recorders=recorders,
        names=names,
    )
    holder.append(helper)
    return helper


@pytest.fixture(autouse=True)
def every_aws_call_is_allowed_by_the_handlers_role(request: pytest.FixtureRequest) -> Iterator[None]:
    """IAM's half of every handler test: what the handler called, its role may call."""
    helper = request.getfixturevalue("helper") if "helper" in request.fixturenames else None
    if not isinstance(helper, Helper):  # a module of its own with another "helper" (the full local cloud)
        yield
        return
    helper.refused_calls()  # what earlier set-up made the handlers call is not this test's
    yield
    assert helper.refused_calls() == []


@pytest.fixture(scope="module")
def app(helper: Helper) -> App:
    return App(helper.session)


@pytest.fixture
def stack(app: App) -> tuple[str, str, dict[str, str]]:
    """A new application stack with one function: (StackId, name, logical path -> function name)."""
    from helper_stack_sessions import stack_with_functions

    return stack_with_functions(app)
