"""Who may do what, by the template's own policies and docs/developer-policy.json.

The local cloud does not enforce IAM (moto evaluates no policy), so these tests are the proof of the IAM
half of each attack on plldb: they evaluate the policies as AWS would (tests/security_iam.py, with the
AWS documents it follows) for requests shaped as each actor would make them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cfn_flip import load_yaml
from security_iam import (
    ALLOW,
    EXPLICIT_DENY,
    IMPLICIT_DENY,
    Deployment,
    Principal,
    Request,
    Unsupported,
    arn_like,
    decide,
    lambda_function_principal,
    resource_matches,
)

from plldb.bootstrap import packaging

ACCOUNT = "210987654321"
REGION = "eu-west-1"
DEVELOPER_POLICY = Path(__file__).resolve().parents[2] / "docs" / "developer-policy.json"
ORDERS_ROLE_ID = "AROAORDERSROLEID0001"
OTHER_ROLE_ID = "AROAOTHERROLEID00002"
DYNAMODB_ACTIONS = [
    "GetItem",
    "PutItem",
    "UpdateItem",
    "DeleteItem",
    "Query",
    "Scan",
    "BatchGetItem",
    "BatchWriteItem",
    "TransactGetItems",
    "TransactWriteItems",
    "DescribeTable",
    "PartiQLSelect",
    "PartiQLUpdate",
]


@pytest.fixture(scope="module")
def stack() -> Deployment:
    return Deployment(
        load_yaml(packaging.template_body()), stack_name="plldb", account=ACCOUNT, region=REGION
    )


def function_arn(name: str) -> str:
    return f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}"


@pytest.fixture(scope="module")
def orders(stack) -> Principal:
    """The code of the instrumented function orders-create, with its role's credentials."""
    return lambda_function_principal(
        [stack.managed_policy("InstrumentedFunctionPolicy")], ORDERS_ROLE_ID, function_arn("orders-create")
    )


def table(stack: Deployment, logical: str) -> str:
    return stack.get_att(logical, "Arn")


def object_arn(stack: Deployment, key: str) -> str:
    return f"{stack.get_att('PayloadBucket', 'Arn')}/{key}"


def connection_arn(stack: Deployment, method: str, connection: str = "L0SM9cOFvHcCIhw=") -> str:
    return f"arn:aws:execute-api:{REGION}:{ACCOUNT}:{stack.ref('WebSocketApi')}/plldb/{method}/@connections/{connection}"


# --- The evaluator itself ----------------------------------------------------------------------------------
def test_for_all_values_holds_when_the_request_has_no_value_for_the_key():
    """The documented pitfall that makes granting Query or Scan with LeadingKeys unsafe."""
    statement = {
        "Effect": "Allow",
        "Action": "dynamodb:*",
        "Resource": "*",
        "Condition": {"ForAllValues:StringEquals": {"dynamodb:LeadingKeys": ["${aws:userid}"]}},
    }
    document = {"Statement": [statement]}
    me = {"aws:userid": "AROAX:fn"}
    assert decide(Request("dynamodb:Scan", "t", me), [document]) == ALLOW
    assert (
        decide(Request("dynamodb:GetItem", "t", {**me, "dynamodb:LeadingKeys": ["AROAX:fn"]}), [document])
        == ALLOW
    )
    assert (
        decide(
            Request("dynamodb:BatchGetItem", "t", {**me, "dynamodb:LeadingKeys": ["AROAX:fn", "AROAY:g"]}),
            [document],
        )
        == IMPLICIT_DENY
    )


@pytest.mark.parametrize(
    ("pattern", "resource", "matches"),
    [
        ("arn:aws:lambda:r:1:function:*", "arn:aws:lambda:r:1:function:orders", True),
        ("arn:aws:lambda:r:1:function:*", "arn:aws:lambda:r:1:function:orders:3", True),  # * ends its segment
        ("arn:aws:lambda:r:1:function:*:*", "arn:aws:lambda:r:1:function:orders", False),
        ("arn:aws:lambda:r:1:function:*:*", "arn:aws:lambda:r:1:function:orders:3", True),
        (
            "arn:aws:lambda:r:1:function:ord*s",
            "arn:aws:lambda:r:1:function:ord:3:s",
            False,
        ),  # not across a colon
        ("arn:aws:s3:::b/events/AROAX:fn/*", "arn:aws:s3:::b/events/AROAX:fn/d1", True),
        ("arn:aws:s3:::b/events/AROAX:fn/*", "arn:aws:s3:::b/events/AROAX:fn-2/d1", False),
        ("arn:aws:iam::1:role/*", "arn:aws:iam::1:role/path/app-role", True),
        ("arn:aws:iam::1:role/App", "arn:aws:iam::1:role/app", False),  # case-sensitive
    ],
)
def test_resource_wildcards_follow_the_segment_rule(pattern: str, resource: str, matches: bool):
    assert resource_matches(pattern, resource) is matches


def test_arn_conditions_compare_each_component_and_actions_ignore_case():
    assert arn_like("arn:aws:lambda:r:1:function:*", "arn:aws:lambda:r:1:function:f")
    assert not arn_like("arn:aws:lambda:r:1:function:*", "arn:aws:lambda:r:2:function:f")
    assert not arn_like("arn:aws:lambda:r:1:function:*", "not-an-arn")
    document = {"Statement": [{"Effect": "Allow", "Action": "Lambda:invokefunction", "Resource": "*"}]}
    assert decide(Request("lambda:InvokeFunction", "x"), [document]) == ALLOW


def test_an_explicit_deny_wins_over_any_allow():
    allow = {"Statement": [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}]}
    deny = {
        "Statement": [
            {
                "Effect": "Deny",
                "Principal": "*",
                "Action": "s3:*",
                "Resource": "*",
                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
            }
        ]
    }
    plain = Request("s3:GetObject", "arn:aws:s3:::b/k", {"aws:SecureTransport": "false"})
    assert decide(plain, [allow], [deny]) == EXPLICIT_DENY
    tls = Request("s3:GetObject", "arn:aws:s3:::b/k", {"aws:SecureTransport": "true"})
    assert decide(tls, [allow], [deny]) == ALLOW


@pytest.mark.parametrize(
    "statement",
    [
        {"Effect": "Allow", "NotAction": "s3:*", "Action": "s3:GetObject", "Resource": "*"},
        {
            "Effect": "Allow",
            "Action": "s3:GetObject",
            "Resource": "*",
            "Condition": {"NumericLessThan": {"k": "1"}},
        },
    ],
)
def test_what_the_evaluator_does_not_implement_is_refused_not_guessed(statement):
    with pytest.raises(Unsupported):
        decide(Request("s3:GetObject", "x", {"k": "0"}), [{"Statement": [statement]}])


# --- Code inside an instrumented function ------------------------------------------------------------------
# The local cloud enforces no IAM (moto evaluates no policy): these evaluations are the proof.
def test_an_instrumented_function_may_do_exactly_what_its_layer_needs(stack, orders):
    me = f"{ORDERS_ROLE_ID}:orders-create"
    own = {"dynamodb:LeadingKeys": [me]}
    bucket = stack.bucket_policies()
    assert orders.may("dynamodb:PutItem", table(stack, "PLLDBInvocations"), own)
    assert orders.may("dynamodb:GetItem", table(stack, "PLLDBInvocations"), own)
    assert orders.may("dynamodb:UpdateItem", table(stack, "PLLDBInvocations"), own)
    assert orders.may("s3:PutObject", object_arn(stack, f"events/{me}/0f1e"), resource_policies=bucket)
    assert orders.may("s3:GetObject", object_arn(stack, f"responses/{me}/0f1e"), resource_policies=bucket)
    assert orders.may("lambda:InvokeFunction", stack.get_att("DispatcherFunction", "Arn"))


@pytest.mark.parametrize(
    "other",
    [
        f"{ORDERS_ROLE_ID}:orders",  # another function of the same role
        f"{ORDERS_ROLE_ID}:orders-create-2",  # a name the caller's is a prefix of
        f"{OTHER_ROLE_ID}:orders-create",  # the same function name under another role
    ],
)
@pytest.mark.parametrize("action", ["PutItem", "GetItem", "UpdateItem"])
def test_an_instrumented_function_cannot_touch_another_callers_invocation_items(stack, orders, other, action):
    assert orders.decide(
        f"dynamodb:{action}", table(stack, "PLLDBInvocations"), {"dynamodb:LeadingKeys": [other]}
    ) == (IMPLICIT_DENY)


@pytest.mark.parametrize(
    "action", ["Query", "Scan", "DeleteItem", "BatchGetItem", "BatchWriteItem", "PartiQLSelect"]
)
def test_an_instrumented_function_cannot_query_scan_delete_or_batch_even_its_own_partition(
    stack, orders, action
):
    me = f"{ORDERS_ROLE_ID}:orders-create"
    for keys in ({}, {"dynamodb:LeadingKeys": [me]}):
        assert orders.decide(f"dynamodb:{action}", table(stack, "PLLDBInvocations"), keys) == IMPLICIT_DENY


@pytest.mark.parametrize("logical", ["PLLDBSessions", "PLLDBConnections", "PLLDBStackLocks"])
def test_an_instrumented_function_cannot_read_or_write_sessions_connections_or_locks(stack, orders, logical):
    me = f"{ORDERS_ROLE_ID}:orders-create"
    for action in DYNAMODB_ACTIONS:
        for keys in ({}, {"dynamodb:LeadingKeys": [me]}):
            assert orders.decide(f"dynamodb:{action}", table(stack, logical), keys) == IMPLICIT_DENY, action


@pytest.mark.parametrize("method", ["POST", "GET", "DELETE"])
def test_an_instrumented_function_cannot_post_to_or_check_any_connection(stack, orders, method):
    assert orders.decide("execute-api:ManageConnections", connection_arn(stack, method)) == IMPLICIT_DENY
    assert orders.decide("execute-api:Invoke", stack.outputs()["ConnectRouteArn"]) == IMPLICIT_DENY


def test_an_instrumented_function_cannot_put_anothers_events_nor_read_anothers_responses_nor_forge_its_own_response(
    stack, orders
):
    me, other = f"{ORDERS_ROLE_ID}:orders-create", f"{OTHER_ROLE_ID}:orders-create"
    bucket = stack.bucket_policies()
    decisions = {
        "put another's event": orders.decide(
            "s3:PutObject", object_arn(stack, f"events/{other}/0f1e"), resource_policies=bucket
        ),
        "read another's response": orders.decide(
            "s3:GetObject", object_arn(stack, f"responses/{other}/0f1e"), resource_policies=bucket
        ),
        "write its own response": orders.decide(
            "s3:PutObject", object_arn(stack, f"responses/{me}/0f1e"), resource_policies=bucket
        ),
        "read another's event": orders.decide(
            "s3:GetObject", object_arn(stack, f"events/{other}/0f1e"), resource_policies=bucket
        ),
        "list the bucket": orders.decide(
            "s3:ListBucket", stack.get_att("PayloadBucket", "Arn"), resource_policies=bucket
        ),
        "delete its own event": orders.decide(
            "s3:DeleteObject", object_arn(stack, f"events/{me}/0f1e"), resource_policies=bucket
        ),
    }
    assert decisions == dict.fromkeys(decisions, IMPLICIT_DENY)


def test_payload_objects_are_reachable_over_tls_only_whoever_asks(stack, orders):
    me = f"{ORDERS_ROLE_ID}:orders-create"
    plain = {"aws:SecureTransport": "false"}
    assert (
        orders.decide("s3:PutObject", object_arn(stack, f"events/{me}/0f1e"), plain, stack.bucket_policies())
        == EXPLICIT_DENY
    )


@pytest.mark.parametrize(
    ("action", "resource"),
    [
        ("lambda:InvokeFunction", "ManagerFunction"),
        ("lambda:InvokeFunction", "RoutesFunction"),
        ("lambda:UpdateFunctionConfiguration", "DispatcherFunction"),
        ("lambda:UpdateFunctionConfiguration", "orders-create"),
        ("lambda:GetFunctionConfiguration", "orders-create"),
        ("iam:AttachRolePolicy", "role"),
        ("sts:AssumeRole", "role"),
    ],
)
def test_an_instrumented_function_gains_nothing_else(stack, orders, action, resource):
    arn = (
        f"arn:aws:iam::{ACCOUNT}:role/app-OrdersRole"
        if resource == "role"
        else (stack.get_att(resource, "Arn") if resource in stack.resources else function_arn(resource))
    )
    assert orders.decide(action, arn) == IMPLICIT_DENY


def test_the_role_credentials_used_outside_lambda_get_nothing_from_plldbs_policy(stack):
    """Whoever holds the role's credentials elsewhere (or assumes the role with the function's name as
    session name) has no lambda:SourceFunctionArn in their requests."""
    outside = lambda_function_principal(
        [stack.managed_policy("InstrumentedFunctionPolicy")],
        ORDERS_ROLE_ID,
        function_arn("orders-create"),
        inside_lambda=False,
    )
    me = f"{ORDERS_ROLE_ID}:orders-create"
    assert outside.decide(
        "dynamodb:PutItem", table(stack, "PLLDBInvocations"), {"dynamodb:LeadingKeys": [me]}
    ) == (IMPLICIT_DENY)
    assert outside.decide(
        "s3:PutObject", object_arn(stack, f"events/{me}/d"), resource_policies=stack.bucket_policies()
    ) == (IMPLICIT_DENY)
    assert (
        outside.decide("lambda:InvokeFunction", stack.get_att("DispatcherFunction", "Arn")) == IMPLICIT_DENY
    )


# --- The developer --------------------------------------------------------------------------------------
# The local cloud enforces no IAM (moto evaluates no policy): these evaluations are the proof.
def developer_policy(stack: Deployment) -> dict[str, Any]:
    """docs/developer-policy.json with this helper stack's values filled in."""
    outputs = stack.outputs()
    text = DEVELOPER_POLICY.read_text(encoding="utf-8")
    for placeholder, value in (
        ("ConnectRouteArn", outputs["ConnectRouteArn"]),
        ("InstrumentedFunctionPolicyArn", outputs["InstrumentedFunctionPolicyArn"]),
        ("ManagerFunctionName", outputs["ManagerFunctionName"]),
        ("HELPER_STACK", stack.stack_name),
        ("ACCOUNT", ACCOUNT),
        ("REGION", REGION),
    ):
        text = text.replace(placeholder, value)
    return dict(json.loads(text))


@pytest.fixture(scope="module")
def developer(stack) -> Principal:
    return Principal("developer", [developer_policy(stack)], {"aws:userid": "AROADEVELOPER0000001:alice"})


def test_the_developer_policy_has_nothing_left_to_fill_in_and_names_this_stacks_resources(stack):
    text = json.dumps(developer_policy(stack))
    for placeholder in (
        "ConnectRouteArn",
        "InstrumentedFunctionPolicyArn",
        "ManagerFunctionName",
        "HELPER_STACK",
        "ACCOUNT",
        "REGION",
    ):
        assert placeholder not in text
    assert stack.outputs()["ConnectRouteArn"] in text
    assert stack.outputs()["LayerVersionArn"].rsplit(":", 1)[0] + ":*" in text


def test_the_developer_may_do_what_attach_and_detach_need(stack, developer):
    function = function_arn("orders-create")
    role = f"arn:aws:iam::{ACCOUNT}:role/app-OrdersRole"
    policy = stack.ref("InstrumentedFunctionPolicy")
    allowed = [
        ("cloudformation:DescribeStacks", f"arn:aws:cloudformation:{REGION}:{ACCOUNT}:stack/orders/1a2b", {}),
        (
            "cloudformation:ListStackResources",
            f"arn:aws:cloudformation:{REGION}:{ACCOUNT}:stack/orders/1a2b",
            {},
        ),
        ("lambda:GetFunctionConfiguration", function, {}),
        ("lambda:GetFunctionConfiguration", function + ":3", {}),
        ("lambda:UpdateFunctionConfiguration", function, {}),
        ("lambda:ListAliases", function, {}),
        ("lambda:UpdateAlias", function + ":live", {}),
        ("lambda:PublishVersion", function, {}),
        ("lambda:ListVersionsByFunction", function, {}),
        ("lambda:ListProvisionedConcurrencyConfigs", function, {}),
        ("lambda:GetPolicy", function + ":3", {}),
        ("lambda:ListEventSourceMappings", "*", {}),
        ("sqs:GetQueueAttributes", f"arn:aws:sqs:{REGION}:{ACCOUNT}:orders-queue", {}),
        ("lambda:DeleteFunction", function + ":7", {}),
        ("lambda:GetLayerVersion", stack.outputs()["LayerVersionArn"], {}),
        ("lambda:GetLayerVersion", stack.outputs()["LayerVersionArn"].rsplit(":", 1)[0] + ":8", {}),
        ("iam:TagRole", role, {"aws:TagKeys": ["plldb:fn:eu-west-1:orders-create"]}),
        ("iam:UntagRole", role, {"aws:TagKeys": ["plldb:fn:eu-west-1:orders-create"]}),
        ("iam:ListRoleTags", role, {}),
        ("iam:AttachRolePolicy", role, {"iam:PolicyARN": policy}),
        ("iam:DetachRolePolicy", role, {"iam:PolicyARN": policy}),
        ("execute-api:Invoke", stack.outputs()["ConnectRouteArn"], {}),
        ("lambda:InvokeFunction", stack.get_att("ManagerFunction", "Arn"), {}),
    ]
    refused = [(a, r, k) for a, r, k in allowed if not developer.may(a, r, k)]
    assert refused == []


def test_the_developer_cannot_reach_the_helper_stacks_tables_objects_connections_or_functions(
    stack, developer
):
    asks = [
        (f"dynamodb:{a}", table(stack, t), {})
        for a in DYNAMODB_ACTIONS
        for t in ("PLLDBSessions", "PLLDBConnections", "PLLDBStackLocks", "PLLDBInvocations")
    ]
    asks += [
        ("execute-api:ManageConnections", connection_arn(stack, m), {}) for m in ("POST", "GET", "DELETE")
    ]
    asks += [(f"s3:{a}", object_arn(stack, "events/AROAX:f/d"), {}) for a in ("GetObject", "PutObject")]
    asks += [(f"s3:{a}", object_arn(stack, "responses/AROAX:f/d"), {}) for a in ("GetObject", "PutObject")]
    asks += [
        ("lambda:InvokeFunction", stack.get_att(f, "Arn"), {})
        for f in ("DispatcherFunction", "RoutesFunction")
    ]
    allowed = [(a, r) for a, r, k in asks if developer.may(a, r, k)]
    assert allowed == []


@pytest.mark.parametrize(
    "action",
    [
        "lambda:UpdateFunctionConfiguration",
        "lambda:UpdateFunctionCode",
        "lambda:UpdateAlias",
        "lambda:PublishVersion",
        "lambda:DeleteFunction",
    ],
)
@pytest.mark.parametrize("function", ["DispatcherFunction", "RoutesFunction", "ManagerFunction"])
def test_the_developer_cannot_change_the_helper_stacks_own_functions(stack, developer, function, action):
    """A layer or variable added to a helper function would run with its role: more than the developer."""
    own_stack = {"aws:ResourceTag/aws:cloudformation:stack-name": stack.stack_name}
    app_stack = {"aws:ResourceTag/aws:cloudformation:stack-name": "orders"}
    arn = stack.get_att(function, "Arn")
    assert developer.decide(action, arn, own_stack) == EXPLICIT_DENY
    assert developer.decide(action, arn + ":1", own_stack) == EXPLICIT_DENY
    assert (
        developer.decide("lambda:UpdateFunctionConfiguration", function_arn("orders-create"), app_stack)
        == ALLOW
    )


@pytest.mark.parametrize(
    ("action", "resource", "keys"),
    [
        ("lambda:DeleteFunction", "function", {}),
        ("iam:TagRole", "role", {"aws:TagKeys": ["owner"]}),
        ("iam:TagRole", "role", {"aws:TagKeys": ["plldb:fn:eu-west-1:f", "owner"]}),
        ("iam:UntagRole", "role", {"aws:TagKeys": ["aws-managed"]}),
        ("iam:AttachRolePolicy", "role", {"iam:PolicyARN": "arn:aws:iam::aws:policy/AdministratorAccess"}),
        ("iam:DetachRolePolicy", "role", {"iam:PolicyARN": f"arn:aws:iam::{ACCOUNT}:policy/app-own-policy"}),
        ("iam:PassRole", "role", {}),
        ("iam:PutRolePolicy", "role", {}),
        ("lambda:UpdateFunctionCode", "function", {}),
        ("lambda:AddPermission", "function", {}),
        ("lambda:GetLayerVersion", f"arn:aws:lambda:{REGION}:{ACCOUNT}:layer:team-secrets:1", {}),
        ("execute-api:Invoke", "default-route", {}),
    ],
)
def test_the_developer_policy_grants_nothing_beyond_plldbs_own_changes(
    stack, developer, action, resource, keys
):
    arn = {
        "function": function_arn("orders-create"),
        "role": f"arn:aws:iam::{ACCOUNT}:role/app-OrdersRole",
        "default-route": stack.outputs()["ConnectRouteArn"].replace("$connect", "$default"),
    }.get(resource, resource)
    assert developer.decide(action, arn, keys) == IMPLICIT_DENY


# --- The helper stack's own roles -----------------------------------------------------------------------
# The local cloud enforces no IAM (moto evaluates no policy): these evaluations are the proof.
def role(stack: Deployment, logical: str) -> Principal:
    return Principal(logical, stack.role_policies(logical), {"aws:SecureTransport": "true"})


def test_only_the_manager_changes_functions_and_only_to_undo_plldb(stack):
    function = function_arn("orders-create")
    routes, dispatcher, manager = (
        role(stack, r) for r in ("PLLDBRoutesRole", "PLLDBDispatcherRole", "PLLDBManagerRole")
    )
    for reader in (routes, dispatcher):
        assert reader.may("lambda:GetFunctionConfiguration", function)
        for action in (
            "UpdateFunctionConfiguration",
            "UpdateAlias",
            "DeleteFunction",
            "PublishVersion",
            "UpdateFunctionCode",
        ):
            assert reader.decide(f"lambda:{action}", function + ":3") == IMPLICIT_DENY, (reader.name, action)
    assert manager.may("lambda:UpdateFunctionConfiguration", function)
    assert manager.may("lambda:DeleteFunction", function + ":3")
    assert manager.decide("lambda:DeleteFunction", function) == IMPLICIT_DENY
    # PublishVersion copies what a function already is (the manager republishes a shared function's list).
    assert manager.may("lambda:PublishVersion", function)
    for action in ("UpdateFunctionCode", "CreateFunction", "AddPermission"):
        assert manager.decide(f"lambda:{action}", function) == IMPLICIT_DENY, action


def test_the_manager_can_only_remove_plldbs_tags_and_move_plldbs_policy(stack):
    manager = role(stack, "PLLDBManagerRole")
    app_role = f"arn:aws:iam::{ACCOUNT}:role/app-OrdersRole"
    policy = stack.ref("InstrumentedFunctionPolicy")
    assert manager.may("iam:UntagRole", app_role, {"aws:TagKeys": ["plldb:fn:eu-west-1:orders-create"]})
    assert manager.may("iam:DetachRolePolicy", app_role, {"iam:PolicyARN": policy})
    assert manager.may("iam:AttachRolePolicy", app_role, {"iam:PolicyARN": policy})
    refused = {
        "tag": manager.decide("iam:TagRole", app_role, {"aws:TagKeys": ["plldb:fn:eu-west-1:x"]}),
        "untag another tag": manager.decide("iam:UntagRole", app_role, {"aws:TagKeys": ["team"]}),
        "attach admin": manager.decide(
            "iam:AttachRolePolicy", app_role, {"iam:PolicyARN": "arn:aws:iam::aws:policy/AdministratorAccess"}
        ),
        "detach the app's own": manager.decide(
            "iam:DetachRolePolicy",
            app_role,
            {"iam:PolicyARN": f"arn:aws:iam::{ACCOUNT}:policy/app-own-policy"},
        ),
        "pass a role": manager.decide("iam:PassRole", app_role),
        "inline policy": manager.decide("iam:PutRolePolicy", app_role),
    }
    assert refused == dict.fromkeys(refused, IMPLICIT_DENY)


def test_only_the_routes_write_sessions_and_connections_and_only_keyed(stack):
    routes, dispatcher, manager = (
        role(stack, r) for r in ("PLLDBRoutesRole", "PLLDBDispatcherRole", "PLLDBManagerRole")
    )
    sessions = table(stack, "PLLDBSessions")
    assert routes.may("dynamodb:PutItem", sessions)
    assert routes.decide("dynamodb:Scan", sessions) == IMPLICIT_DENY
    assert routes.decide("dynamodb:DeleteItem", sessions) == IMPLICIT_DENY
    assert dispatcher.may("dynamodb:GetItem", sessions)
    for action in ("PutItem", "UpdateItem", "DeleteItem", "Scan"):
        assert dispatcher.decide(f"dynamodb:{action}", sessions) == IMPLICIT_DENY, action
    assert manager.may("dynamodb:UpdateItem", sessions)
    assert manager.decide("dynamodb:PutItem", sessions) == IMPLICIT_DENY, (
        "the manager never creates a session"
    )
    for helper_role in (dispatcher, manager):
        assert helper_role.decide("dynamodb:PutItem", table(stack, "PLLDBConnections")) == IMPLICIT_DENY
    invocations = table(stack, "PLLDBInvocations")
    for helper_role in (routes, dispatcher, manager):
        assert helper_role.decide("dynamodb:PutItem", invocations) == IMPLICIT_DENY, (
            "only a function writes its item"
        )


def test_the_dispatcher_presigns_event_downloads_and_the_routes_response_uploads_only(stack):
    routes, dispatcher = role(stack, "PLLDBRoutesRole"), role(stack, "PLLDBDispatcherRole")
    bucket = stack.bucket_policies()
    event, response = object_arn(stack, "events/AROAX:f/d"), object_arn(stack, "responses/AROAX:f/d")
    assert dispatcher.may("s3:GetObject", event, resource_policies=bucket)
    assert dispatcher.decide("s3:PutObject", event, resource_policies=bucket) == IMPLICIT_DENY
    assert dispatcher.decide("s3:GetObject", response, resource_policies=bucket) == IMPLICIT_DENY
    assert routes.may("s3:PutObject", response, resource_policies=bucket)
    assert routes.decide("s3:PutObject", event, resource_policies=bucket) == IMPLICIT_DENY
