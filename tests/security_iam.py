"""A small IAM policy evaluator, for tests only: the proof of what the helper stack's policies allow.

The local cloud does not enforce IAM (moto evaluates no policy), and no library evaluates conditions, so
the tests that show who may do what evaluate the template's own policies here. It covers exactly what
plldb's policies use, and refuses anything else (NotAction, NotResource, other operators) rather than
guessing. It follows these AWS documents:

- Policy evaluation within one account: an explicit Deny in any policy wins; otherwise any Allow in an
  identity-based or resource-based policy allows; otherwise the request is implicitly denied
  (IAM User Guide, "Policy evaluation logic", reference_policies_evaluation-logic.html).
- Action: service prefix and action name, case-insensitive, with * and ? wildcards
  (reference_policies_elements_action.html).
- Resource: ARNs with * and ? inside each colon-separated segment; a * that ends a segment may expand past
  the colons that follow it (reference_policies_elements_resource.html, "Using wildcards in resource ARNs").
- Condition: keys of one operator and operators of one statement must all hold; the values of one key
  are alternatives; a key absent from the request fails a single-valued operator; ForAllValues holds when
  every value of the request's key matches some policy value, and also when the key is absent or empty;
  ArnEquals and ArnLike compare each of the six ARN components with * and ? wildcards; Bool compares
  "true"/"false" (reference_policies_elements_condition_operators.html,
  reference_policies_condition-single-vs-multi-valued-context-keys.html).
- Policy variables such as ${aws:userid} are replaced in Resource and condition values by the request's
  value; a statement whose variable has no value does not match (reference_policies_variables.html).
  For a Lambda function's execution role session aws:userid is "role-id:function-name"
  (reference_policies_condition-keys.html#condition-keys-userid; Lambda names the role session after
  the function).
- lambda:SourceFunctionArn is in the request context only for calls made with the execution role's
  credentials from inside the function's execution environment (Lambda Developer Guide,
  permissions-source-function-arn.html); dynamodb:LeadingKeys holds the partition key values of a
  keyed request (DynamoDB Developer Guide, specifying-conditions.html).

CloudFormation intrinsics (Ref, Fn::GetAtt, Fn::Sub with ${!Literal}) are resolved for one deployment
of a template, with physical names generated the way CloudFormation shapes them.
"""

from __future__ import annotations

import copy
import hashlib
import re
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

ALLOW = "Allow"
IMPLICIT_DENY = "ImplicitDeny"
EXPLICIT_DENY = "ExplicitDeny"

SUPPORTED_OPERATORS = (
    "StringEquals",
    "StringLike",
    "ArnEquals",
    "ArnLike",
    "Bool",
    "ForAllValues:StringEquals",
    "ForAllValues:StringLike",
)
_VARIABLE = re.compile(r"\$\{([A-Za-z0-9:_/-]+)\}")


class Unsupported(Exception):
    """A policy uses something this evaluator does not implement: the test must not pass by accident."""


@dataclass(frozen=True)
class Request:
    """One API call: its action, the resource it acts on and the request context's condition keys."""

    action: str
    resource: str
    context: Mapping[str, str | list[str]] = field(default_factory=dict)


# --- Matching -------------------------------------------------------------------------------------------
def _glob(pattern: str, *, across_colons: bool, ignore_case: bool = False) -> re.Pattern[str]:
    parts = []
    for index, char in enumerate(pattern):
        if char == "*":
            ends_segment = index + 1 == len(pattern) or pattern[index + 1] == ":"
            parts.append(".*" if across_colons or ends_segment else "[^:]*")
        elif char == "?":
            parts.append("." if across_colons else "[^:]")
        else:
            parts.append(re.escape(char))
    return re.compile("".join(parts) + r"\Z", re.DOTALL | (re.IGNORECASE if ignore_case else 0))


def action_matches(pattern: str, action: str) -> bool:
    return bool(_glob(pattern, across_colons=True, ignore_case=True).match(action))


def resource_matches(pattern: str, resource: str) -> bool:
    if pattern == "*":
        return True
    return bool(_glob(pattern, across_colons=False).match(resource))


def arn_like(pattern: str, value: str) -> bool:
    """Each of the six ARN components compared separately, with * and ? inside a component."""
    wanted, actual = pattern.split(":", 5), value.split(":", 5)
    if len(wanted) != 6 or len(actual) != 6:
        return pattern == value
    return all(_glob(p, across_colons=True).match(a) for p, a in zip(wanted, actual, strict=True))


def _values(value: Any) -> list[str]:
    items = value if isinstance(value, list) else [value]
    return [("true" if item else "false") if isinstance(item, bool) else str(item) for item in items]


def _substitute(text: str, context: Mapping[str, Any]) -> str | None:
    """The text with its policy variables replaced; None when a variable has no value in the request."""
    lowered = {key.lower(): value for key, value in context.items()}
    missing = False

    def replace(match: re.Match[str]) -> str:
        nonlocal missing
        value = lowered.get(match.group(1).lower())
        if not isinstance(value, str):
            missing = True
            return ""
        return value

    result = _VARIABLE.sub(replace, text)
    return None if missing else result


def _condition_holds(operator: str, key: str, policy_values: list[str], context: Mapping[str, Any]) -> bool:
    lowered = {name.lower(): value for name, value in context.items()}
    actual = lowered.get(key.lower())
    wanted = [v for v in (_substitute(value, context) for value in policy_values) if v is not None]
    if operator.startswith("ForAllValues:"):
        if actual is None:
            return True
        items = actual if isinstance(actual, list) else [actual]
        single = operator.split(":", 1)[1]
        return all(_condition_holds(single, key, wanted, {key: item}) for item in items)
    if actual is None:
        return False
    if isinstance(actual, list):
        raise Unsupported(f"{operator} on the multivalued key {key}")
    if operator == "StringEquals":
        return actual in wanted
    if operator == "StringLike":
        return any(_glob(w, across_colons=True).match(actual) for w in wanted)
    if operator in ("ArnEquals", "ArnLike"):
        return any(arn_like(w, actual) for w in wanted)
    if operator == "Bool":
        return actual.lower() in [w.lower() for w in wanted]
    raise Unsupported(f"condition operator {operator}")


def statement_matches(statement: Mapping[str, Any], request: Request) -> bool:
    for unsupported in ("NotAction", "NotResource", "NotPrincipal"):
        if unsupported in statement:
            raise Unsupported(unsupported)
    if not any(action_matches(a, request.action) for a in _values(statement["Action"])):
        return False
    resources = [_substitute(r, request.context) for r in _values(statement.get("Resource", "*"))]
    if not any(r is not None and resource_matches(r, request.resource) for r in resources):
        return False
    for operator, keys in (statement.get("Condition") or {}).items():
        if operator not in SUPPORTED_OPERATORS:
            raise Unsupported(f"condition operator {operator}")
        for key, values in keys.items():
            if not _condition_holds(operator, key, _values(values), request.context):
                return False
    return True


def _statements(document: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    statements = document["Statement"]
    return list(statements) if isinstance(statements, list) else [statements]


def decide(
    request: Request,
    identity_policies: Iterable[Mapping[str, Any]],
    resource_policies: Iterable[Mapping[str, Any]] = (),
) -> str:
    """ALLOW, IMPLICIT_DENY or EXPLICIT_DENY for a principal of the resource's own account."""
    allowed = False
    for document in [*identity_policies, *resource_policies]:
        for statement in _statements(document):
            principal = statement.get("Principal")
            if principal is not None and principal != "*":
                raise Unsupported(f"resource policy principal {principal}")
            if statement_matches(statement, request):
                if statement["Effect"] == "Deny":
                    return EXPLICIT_DENY
                allowed = True
    return ALLOW if allowed else IMPLICIT_DENY


# --- CloudFormation -------------------------------------------------------------------------------------
def _suffix(*parts: str, length: int = 12) -> str:
    return hashlib.sha256("/".join(parts).encode()).hexdigest()[:length].upper()


@dataclass
class Deployment:
    """One deployment of a template: its intrinsics resolved, its policies and outputs readable."""

    template: Mapping[str, Any]
    stack_name: str = "plldb"
    account: str = "123456789012"
    region: str = "eu-west-1"
    partition: str = "aws"
    parameters: dict[str, str] = field(default_factory=dict)
    # Physical names (or ids) of resources that exist already, by logical id: a test's own tables.
    overrides: dict[str, str] = field(default_factory=dict)
    existing_stack_id: str = ""

    @property
    def stack_id(self) -> str:
        if self.existing_stack_id:
            return self.existing_stack_id
        return (
            f"arn:{self.partition}:cloudformation:{self.region}:{self.account}:stack/{self.stack_name}/"
            f"{_suffix(self.stack_name, length=8).lower()}-0000-4000-8000-000000000000"
        )

    @property
    def resources(self) -> Mapping[str, Any]:
        return self.template["Resources"]

    def physical_name(self, logical_id: str) -> str:
        """The resource's own name if the template gives one, else one CloudFormation would generate."""
        if logical_id in self.overrides:
            return self.overrides[logical_id]
        resource = self.resources[logical_id]
        properties = resource.get("Properties", {})
        for name_property in (
            "TableName",
            "RoleName",
            "ManagedPolicyName",
            "FunctionName",
            "LayerName",
            "Name",
        ):
            if name_property in properties:
                return str(self.resolve(properties[name_property]))
        generated = f"{self.stack_name}-{logical_id}-{_suffix(self.stack_name, logical_id)}"
        return generated.lower() if resource["Type"] == "AWS::S3::Bucket" else generated

    def ref(self, name: str) -> str:
        pseudo = {
            "AWS::AccountId": self.account,
            "AWS::Region": self.region,
            "AWS::Partition": self.partition,
            "AWS::StackName": self.stack_name,
            "AWS::StackId": self.stack_id,
            "AWS::URLSuffix": "amazonaws.com",
        }
        if name in pseudo:
            return pseudo[name]
        if name in self.template.get("Parameters", {}):
            default = self.template["Parameters"][name].get("Default")
            return str(self.parameters.get(name, default))
        kind = self.resources[name]["Type"]
        physical = self.physical_name(name)
        if name in self.overrides and kind != "AWS::IAM::ManagedPolicy":
            return physical
        if kind == "AWS::IAM::ManagedPolicy":
            path = str(self.resolve(self.resources[name]["Properties"].get("Path", "/")))
            return f"arn:{self.partition}:iam::{self.account}:policy{path}{physical}"
        if kind == "AWS::Lambda::LayerVersion":
            return f"arn:{self.partition}:lambda:{self.region}:{self.account}:layer:{physical}:1"
        if kind in ("AWS::ApiGatewayV2::Api", "AWS::ApiGatewayV2::Integration", "AWS::ApiGatewayV2::Route"):
            return _suffix(self.stack_name, name, length=10).lower()
        if kind == "AWS::ApiGatewayV2::Stage":
            return str(self.resolve(self.resources[name]["Properties"]["StageName"]))
        return physical

    def get_att(self, name: str, attribute: str) -> str:
        kind = self.resources[name]["Type"]
        physical = self.physical_name(name)
        p, r, a = self.partition, self.region, self.account
        arns = {
            "AWS::DynamoDB::Table": f"arn:{p}:dynamodb:{r}:{a}:table/{physical}",
            "AWS::S3::Bucket": f"arn:{p}:s3:::{physical}",
            "AWS::Lambda::Function": f"arn:{p}:lambda:{r}:{a}:function:{physical}",
            "AWS::IAM::Role": f"arn:{p}:iam::{a}:role/{physical}",
            "AWS::Logs::LogGroup": f"arn:{p}:logs:{r}:{a}:log-group:{physical}:*",
            "AWS::Events::Rule": f"arn:{p}:events:{r}:{a}:rule/{physical}",
        }
        if attribute == "Arn" and kind in arns:
            return arns[kind]
        if attribute == "RoleId" and kind == "AWS::IAM::Role":
            return "AROA" + _suffix(self.stack_name, name, length=17)
        raise Unsupported(f"Fn::GetAtt {name}.{attribute} of {kind}")

    def _sub(self, text: str, variables: Mapping[str, Any]) -> str:
        def replace(match: re.Match[str]) -> str:
            inner = match.group(1)
            if inner.startswith("!"):
                return "${" + inner[1:] + "}"
            if inner in variables:
                return str(self.resolve(variables[inner]))
            if "." in inner and inner.split(".", 1)[0] in self.resources:
                logical, attribute = inner.split(".", 1)
                return self.get_att(logical, attribute)
            return self.ref(inner)

        return re.sub(r"\$\{([^}]+)\}", replace, text)

    def resolve(self, value: Any) -> Any:
        if isinstance(value, list):
            return [self.resolve(item) for item in value]
        if not isinstance(value, Mapping):
            return value
        if len(value) == 1:
            (key, argument), *_ = value.items()
            if key == "Ref":
                return self.ref(argument)
            if key == "Fn::GetAtt":
                logical, attribute = argument if isinstance(argument, list) else argument.split(".", 1)
                return self.get_att(logical, attribute)
            if key == "Fn::Sub":
                text, variables = (argument, {}) if isinstance(argument, str) else argument
                return self._sub(text, variables)
            if key.startswith("Fn::"):
                raise Unsupported(key)
        return {key: self.resolve(item) for key, item in value.items()}

    # --- What the deployment holds ------------------------------------------------------------------
    def of_type(self, kind: str) -> list[str]:
        return [logical for logical, resource in self.resources.items() if resource["Type"] == kind]

    def managed_policy(self, logical_id: str) -> dict[str, Any]:
        return dict(self.resolve(self.resources[logical_id]["Properties"]["PolicyDocument"]))

    def role_policies(self, logical_id: str) -> list[dict[str, Any]]:
        """The role's inline policies and the template's managed policies it names."""
        properties = self.resources[logical_id]["Properties"]
        documents = [self.resolve(p["PolicyDocument"]) for p in properties.get("Policies", [])]
        managed = {self.ref(m): m for m in self.of_type("AWS::IAM::ManagedPolicy")}
        for arn in self.resolve(properties.get("ManagedPolicyArns", [])):
            if arn not in managed:
                raise Unsupported(f"managed policy {arn} outside the template")
            documents.append(self.managed_policy(managed[arn]))
        return documents

    def trust_policy(self, logical_id: str) -> dict[str, Any]:
        return dict(self.resolve(self.resources[logical_id]["Properties"]["AssumeRolePolicyDocument"]))

    def bucket_policies(self) -> list[dict[str, Any]]:
        return [
            self.resolve(self.resources[logical]["Properties"]["PolicyDocument"])
            for logical in self.of_type("AWS::S3::BucketPolicy")
        ]

    def function_environment(self, logical_id: str) -> dict[str, str]:
        """The variables the template gives one of its functions."""
        variables = self.resources[logical_id]["Properties"].get("Environment", {}).get("Variables", {})
        return {name: str(self.resolve(value)) for name, value in variables.items()}

    def outputs(self) -> dict[str, str]:
        return {key: str(self.resolve(output["Value"])) for key, output in self.template["Outputs"].items()}

    def all_statements(self) -> list[tuple[str, Mapping[str, Any]]]:
        """(resource logical id, statement) of every identity policy the template defines."""
        found: list[tuple[str, Mapping[str, Any]]] = []
        for logical in self.of_type("AWS::IAM::Role"):
            for policy in self.resources[logical]["Properties"].get("Policies", []):
                found.extend((logical, s) for s in _statements(self.resolve(policy["PolicyDocument"])))
        for logical in self.of_type("AWS::IAM::ManagedPolicy"):
            found.extend((logical, s) for s in _statements(self.managed_policy(logical)))
        return found


# --- Principals --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Principal:
    """Who makes requests: their identity policies and the condition keys AWS puts in their requests."""

    name: str
    policies: list[dict[str, Any]]
    context: Mapping[str, str | list[str]] = field(default_factory=dict)

    def decide(
        self,
        action: str,
        resource: str,
        keys: Mapping[str, str | list[str]] | None = None,
        resource_policies: Iterable[Mapping[str, Any]] = (),
    ) -> str:
        """The decision on one request of this principal, with extra condition keys of the request."""
        return decide(
            Request(action, resource, {**self.context, **(keys or {})}), self.policies, resource_policies
        )

    def may(
        self,
        action: str,
        resource: str,
        keys: Mapping[str, str | list[str]] | None = None,
        resource_policies: Iterable[Mapping[str, Any]] = (),
    ) -> bool:
        return self.decide(action, resource, keys, resource_policies) == ALLOW


def lambda_function_principal(
    policies: list[dict[str, Any]], role_id: str, function_arn: str, *, inside_lambda: bool = True
) -> Principal:
    """A function's code calling AWS with its execution role's credentials (or those used elsewhere)."""
    function_name = function_arn.rsplit(":", 1)[-1]
    context: dict[str, str | list[str]] = {
        "aws:userid": f"{role_id}:{function_name}",
        "aws:SecureTransport": "true",
    }
    if inside_lambda:
        context["lambda:SourceFunctionArn"] = function_arn
    return Principal(function_name, policies, context)


# --- The AWS calls code makes, as IAM sees them ------------------------------------------------------
@dataclass(frozen=True)
class Call:
    """One AWS API call a client made (botocore's service name, operation name and parameters)."""

    service: str
    operation: str
    params: Mapping[str, Any]


class CallRecorder:
    """Records every API call of the clients it is attached to, with its parameters as the code passed them
    (botocore's before-parameter-build event, which paginated calls go through as well)."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self._lock = threading.Lock()

    def attach(self, client: Any) -> Any:
        client.meta.events.register("before-parameter-build", self._record)
        return client

    def _record(self, params: Mapping[str, Any], model: Any, **_: Any) -> None:
        call = Call(model.service_model.service_name, model.name, copy.deepcopy(dict(params)))
        with self._lock:
            self.calls.append(call)

    def take(self) -> list[Call]:
        with self._lock:
            calls, self.calls = self.calls, []
        return calls


@dataclass(frozen=True)
class Names:
    """What turns a call's parameters into ARNs: the account, and the facts a parameter does not carry."""

    region: str
    account: str
    hash_keys: Mapping[str, str]  # table name -> its partition key attribute
    api_id: str = ""
    stage: str = ""
    partition: str = "aws"


def _function_arn(names: Names, function: str, qualifier: str | None = None) -> str:
    if function.startswith("arn:"):
        base = function
    elif function.count(":") >= 2:  # partial ARN: ACCOUNT:function:NAME
        base = f"arn:{names.partition}:lambda:{names.region}:{function}"
    else:
        base = f"arn:{names.partition}:lambda:{names.region}:{names.account}:function:{function}"
    return f"{base}:{qualifier}" if qualifier else base


def requests_for(call: Call, names: Names) -> list[Request]:
    """The IAM requests one call makes (Lambda also checks GetLayerVersion on every layer it is given)."""
    p, r, a = names.partition, names.region, names.account
    service, operation, params = call.service, call.operation, call.params
    if service == "dynamodb":
        table = str(params["TableName"])
        resource = f"arn:{p}:dynamodb:{r}:{a}:table/{table}"
        context: dict[str, str | list[str]] = {}
        key = params.get("Key") or params.get("Item")
        if key is not None:
            value = key[names.hash_keys[table]]
            context["dynamodb:LeadingKeys"] = [str(next(iter(value.values())))]
        elif operation != "Scan":
            raise Unsupported(f"dynamodb {operation}")
        return [Request(f"dynamodb:{operation}", resource, context)]
    if service == "lambda":
        action = "lambda:InvokeFunction" if operation == "Invoke" else f"lambda:{operation}"
        if "FunctionName" not in params:  # a listing of the account's (ListEventSourceMappings)
            return [Request(action, "*")]
        qualifier = params.get("Qualifier") or (params.get("Name") if operation == "UpdateAlias" else None)
        requests = [Request(action, _function_arn(names, str(params["FunctionName"]), qualifier))]
        if operation == "UpdateFunctionConfiguration":
            requests.extend(Request("lambda:GetLayerVersion", layer) for layer in params.get("Layers") or [])
        return requests
    if service == "iam":
        resource = f"arn:{p}:iam::{a}:role/{params['RoleName']}"
        context = {}
        if operation == "TagRole":
            context["aws:TagKeys"] = [str(tag["Key"]) for tag in params["Tags"]]
        elif operation == "UntagRole":
            context["aws:TagKeys"] = [str(key) for key in params["TagKeys"]]
        elif operation in ("AttachRolePolicy", "DetachRolePolicy"):
            context["iam:PolicyARN"] = str(params["PolicyArn"])
        return [Request(f"iam:{operation}", resource, context)]
    if service == "cloudformation":
        stack = str(params["StackName"])
        if not stack.startswith("arn:"):
            stack = f"arn:{p}:cloudformation:{r}:{a}:stack/{stack}/00000000-0000-4000-8000-000000000000"
        return [Request(f"cloudformation:{operation}", stack)]
    if service == "apigatewaymanagementapi":
        method = {"PostToConnection": "POST", "GetConnection": "GET", "DeleteConnection": "DELETE"}[operation]
        resource = f"arn:{p}:execute-api:{r}:{a}:{names.api_id}/{names.stage}/{method}/@connections/{params['ConnectionId']}"
        return [Request("execute-api:ManageConnections", resource)]
    if service == "s3":
        action = {"HeadObject": "s3:GetObject", "GetObject": "s3:GetObject", "PutObject": "s3:PutObject"}[
            operation
        ]
        return [
            Request(
                action, f"arn:{p}:s3:::{params['Bucket']}/{params['Key']}", {"aws:SecureTransport": "true"}
            )
        ]
    if service == "sqs":
        if operation == "GetQueueUrl":
            owner, queue = params.get("QueueOwnerAWSAccountId") or a, params["QueueName"]
        else:
            owner, queue = str(params["QueueUrl"]).rstrip("/").split("/")[-2:]
        return [Request(f"sqs:{operation}", f"arn:{p}:sqs:{r}:{owner}:{queue}")]
    if service == "sts" and operation == "GetCallerIdentity":
        return []  # needs no permission
    raise Unsupported(f"{service} {operation}")


def denied_calls(
    calls: Iterable[Call],
    principal: Principal,
    names: Names,
    resource_policies: Iterable[Mapping[str, Any]] = (),
) -> list[str]:
    """Each call (and IAM request) the principal's policies do not allow, as a readable line."""
    refused = []
    for call in calls:
        for request in requests_for(call, names):
            decision = principal.decide(request.action, request.resource, request.context, resource_policies)
            if decision != ALLOW:
                refused.append(
                    f"{call.service}.{call.operation}: {request.action} on {request.resource} {dict(request.context)} -> {decision}"
                )
    return refused
