"""Make moto's AWS answer the way AWS does, for SAM applications and plldb's helper stack.

moto 5.2.5 in server mode leaves gaps that typical SAM templates fall into: some resource types are
silently skipped, some Refs resolve to Python objects, updates of several types fail or drop the resource,
the SAM transform is never applied, and failures surface as HTTP 500s instead of stack events. Its
Lambda runs nothing without Docker. install() closes each gap with a patch of moto's classes in this
process, one module per service as moto lays itself out; every patch names the gap it closes and goes
through :func:`plldb.localcloud.moto_extensions.core.patch`. Nothing here is visible to product code: it
only makes the local cloud answer like AWS.

| module | what it extends |
|---|---|
| ``core`` | the one patching mechanism and the base of the CloudFormation models defined here |
| ``server`` | moto's request dispatch (speed only) |
| ``templates`` | template parsing, the SAM transform, reference validation |
| ``support`` | the resource types and attributes the local cloud deploys; refusal of templates that need more |
| ``stack_events``, ``stacks`` | resource events; stack lifecycle, rollback, GetTemplate, no-op updates |
| ``resources`` | create / update / delete of one resource and of a whole stack |
| ``awslambda`` | Lambda functions, layers, permissions, versions and aliases in CloudFormation; RevisionId |
| ``awslambda_versions`` | versions and aliases: PublishVersion, DeleteFunction with a qualifier, UpdateAlias; the resource policies and event source mappings of qualified functions |
| ``awslambda_provisioned`` | provisioned concurrency: its four operations, an alias moved to another version, an injectable clock |
| ``awslambda_invoke`` | Invoke through real execution environments (installed by the local cloud) |
| ``iam_propagation`` | IAM's eventual consistency on demand: the next calls of a principal to an action are denied |
| ``s3`` | AWS::S3::BucketPolicy; object PUTs keep their bytes; presigned URLs expire; no policy decides a request |
| ``stepfunctions_executions`` | executions run: the deployed ASL interpreted, Lambda tasks in real environments, StartSyncExecution, an injectable clock |
| ``events`` | EventBridge's validation of schedule expressions (the local cloud's scheduler fires the rules) |
| ``dynamodb``, ``iam``, ``apigateway``, ``apigatewayv2``, ``stepfunctions``, ``nested_stacks`` | those services |
"""

from __future__ import annotations

import threading

from moto.cloudformation import parsing

from plldb.localcloud.moto_extensions import (
    apigateway,
    apigatewayv2,
    awslambda,
    awslambda_provisioned,
    awslambda_versions,
    dynamodb,
    events,
    iam,
    iam_propagation,
    nested_stacks,
    resources,
    s3,
    server,
    stacks,
    stepfunctions,
    stepfunctions_executions,
    templates,
)
from plldb.localcloud.moto_extensions.apigateway import RestApiStage
from plldb.localcloud.moto_extensions.apigatewayv2 import (
    GatewayApi,
    GatewayAuthorizer,
    GatewayDeployment,
    GatewayIntegration,
    GatewayRoute,
    GatewayRouteResponse,
    GatewayStage,
)
from plldb.localcloud.moto_extensions.awslambda import FunctionAlias
from plldb.localcloud.moto_extensions.iam import ensure_managed_policy
from plldb.localcloud.moto_extensions.resources import dependency_order, generate_resource_name
from plldb.localcloud.moto_extensions.s3 import BucketPolicy
from plldb.localcloud.moto_extensions.stack_events import ResourceFailed, failure_reason, record_event
from plldb.localcloud.moto_extensions.templates import (
    SAM_TRANSFORM,
    apply_sam_transform,
    parse_template_text,
    template_references,
    validate_references,
)

__all__ = [
    "SAM_TRANSFORM",
    "BucketPolicy",
    "FunctionAlias",
    "GatewayApi",
    "GatewayAuthorizer",
    "GatewayDeployment",
    "GatewayIntegration",
    "GatewayRoute",
    "GatewayRouteResponse",
    "GatewayStage",
    "ResourceFailed",
    "RestApiStage",
    "apply_sam_transform",
    "dependency_order",
    "ensure_managed_policy",
    "failure_reason",
    "generate_resource_name",
    "install",
    "parse_template_text",
    "record_event",
    "template_references",
    "validate_references",
]

# The CloudFormation models defined here, which moto must find by their resource type.
MODELS = (
    RestApiStage,
    GatewayApi,
    GatewayRoute,
    GatewayRouteResponse,
    GatewayIntegration,
    GatewayAuthorizer,
    GatewayDeployment,
    GatewayStage,
    FunctionAlias,
    BucketPolicy,
)

_install_lock = threading.Lock()
_installed = False


def install() -> None:
    """Patch moto in this process (idempotent). Call before the moto server handles its first request."""
    global _installed
    with _install_lock:
        if _installed:
            return
        templates.install()
        stacks.install()
        resources.install()
        awslambda.install()
        awslambda_versions.install()
        awslambda_provisioned.install()
        dynamodb.install()
        events.install()
        iam.install()
        apigateway.install()
        stepfunctions.install()
        stepfunctions_executions.install()
        nested_stacks.install()
        apigatewayv2.install()
        iam_propagation.install()
        s3.install()
        server.install()
        refresh_model_cache()
        _installed = True


def refresh_model_cache() -> None:
    """Quirk: moto caches its type -> model map on first use; forget it so the models above are found."""
    parsing.get_model_list.cache_clear()
    parsing.get_model_map.cache_clear()
    parsing.get_name_type_map.cache_clear()
    missing = [
        model.cloudformation_type()
        for model in MODELS
        if parsing.get_model_map().get(model.cloudformation_type()) is not model
    ]
    if missing:
        raise RuntimeError(f"moto did not pick up the CloudFormation models for {', '.join(missing)}")
