"""API Gateway (REST): AWS::ApiGateway::RestApi, ::Deployment, ::Stage, what SAM's implicit ServerlessRestApi needs.

Gap 6: a RestApi with Body and no Name (SAM's ServerlessRestApi) failed with HTTP 500; Deployment had no
physical id (Ref gave an object), and neither could be updated or deleted.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from moto.apigateway import models as apigateway_models
from moto.core.common_models import CloudFormationModel
from moto.utilities.utils import get_partition

from plldb.localcloud.moto_extensions.core import (
    Properties,
    UpdatableModel,
    created_from_properties,
    patch,
    tags_as_dict,
    tags_as_list,
    updated_or_replaced,
)
from plldb.localcloud.moto_extensions.templates import parse_template_text

HTTP_METHODS = frozenset({"get", "put", "post", "delete", "options", "head", "patch", "trace", "any"})


def api_document(properties: Mapping[str, Any], account_id: str, region_name: str) -> dict[str, Any] | None:
    """The Swagger/OpenAPI document of Body or BodyS3Location, if the API has one."""
    body = properties.get("Body")
    location = properties.get("BodyS3Location")
    if body is None and isinstance(location, dict):
        from moto.s3.models import s3_backends

        key = s3_backends[account_id][get_partition(region_name)].get_object(
            location["Bucket"], location["Key"]
        )
        body = parse_template_text(key.value.decode("utf-8"))  # type: ignore[union-attr]
    if isinstance(body, str):
        body = parse_template_text(body)
    return body if isinstance(body, dict) else None


def _import_rest_api_paths(backend: Any, api_id: str, document: Mapping[str, Any]) -> None:
    """Resources, methods and integrations of a Swagger 2.0 or OpenAPI 3 document (moto reads only OpenAPI 3)."""
    paths: dict[str, Any] = {}
    for path, operations in (document.get("paths") or {}).items():
        if not isinstance(operations, dict):
            continue
        methods = {}
        for method, operation in operations.items():
            name = "any" if method == "x-amazon-apigateway-any-method" else method.lower()
            if name in HTTP_METHODS and isinstance(operation, dict):
                methods[name] = {key: value for key, value in operation.items() if key != "parameters"}
        paths[path] = methods
    backend.put_rest_api(
        api_id, {"openapi": "3.0.1", "info": {}, "paths": paths}, fail_on_warnings=False, mode="overwrite"
    )


def _backend(account_id: str, region_name: str) -> Any:
    return apigateway_models.apigateway_backends[account_id][region_name]


def rest_api_create(
    cls: Any, resource_name: str, properties: Properties, account_id: str, region_name: str
) -> Any:
    document = api_document(properties, account_id, region_name)
    api_name = properties.get("Name") or ((document or {}).get("info") or {}).get("title")
    if not api_name:
        raise ValueError("BadRequestException", "A RestApi needs a Name, or a Body whose info.title names it")
    api = _backend(account_id, region_name).create_rest_api(
        name=str(api_name),
        description=properties.get("Description", ""),
        endpoint_configuration=properties.get("EndpointConfiguration"),
        tags=tags_as_list(properties.get("Tags")) or None,
        policy=json.dumps(properties["Policy"])
        if isinstance(properties.get("Policy"), dict)
        else properties.get("Policy"),
        api_key_source=properties.get("ApiKeySourceType"),
        disable_execute_api_endpoint=properties.get("DisableExecuteApiEndpoint"),
    )
    if document is not None:
        _import_rest_api_paths(_backend(account_id, region_name), api.id, document)
    return api


def rest_api_update(api: Any, properties: Properties, account_id: str, region_name: str) -> Any:
    document = api_document(properties, account_id, region_name)
    api.name = properties.get("Name") or ((document or {}).get("info") or {}).get("title") or api.name
    api.description = properties.get("Description", "")
    if document is not None:
        _import_rest_api_paths(_backend(account_id, region_name), api.id, document)
    return api


def rest_api_delete(self: Any, account_id: str, region_name: str) -> None:
    _backend(account_id, region_name).delete_rest_api(self.id)


def deployment_create(
    cls: Any, resource_name: str, properties: Properties, account_id: str, region_name: str
) -> Any:
    deployment = _backend(account_id, region_name).create_deployment(
        function_id=properties["RestApiId"],
        name=properties.get("StageName"),
        description=properties.get("Description", ""),
    )
    deployment.rest_api_id = properties["RestApiId"]
    return deployment


def deployment_delete(self: Any, account_id: str, region_name: str) -> None:
    api = _backend(account_id, region_name).get_rest_api(self.rest_api_id)
    own_stage = api.stages.get(self.stage_name) if self.stage_name else None
    if own_stage is not None and own_stage.deployment_id == self.id:
        del api.stages[self.stage_name]  # the stage this deployment created goes with it
    if any(stage.deployment_id == self.id for stage in api.stages.values()):
        raise ValueError(
            "BadRequestException", "Active stages pointing to this deployment must be moved or deleted"
        )
    api.deployments.pop(self.id, None)


class RestApiStage(UpdatableModel, CloudFormationModel):
    """AWS::ApiGateway::Stage (gap 6: missing, so SAM's ServerlessRestApiProdStage was skipped)."""

    RESOURCE_TYPE = "AWS::ApiGateway::Stage"
    NAME_PROPERTY = "StageName"
    PHYSICAL_ID = "stage_name"

    def __init__(self, rest_api_id: str, stage_name: str, account_id: str, region_name: str) -> None:
        self.rest_api_id = rest_api_id
        self.stage_name = stage_name
        self.account_id = account_id
        self.region_name = region_name

    @classmethod
    def _create(
        cls, resource_name: str, properties: Properties, account_id: str, region_name: str
    ) -> RestApiStage:
        backend = apigateway_models.apigateway_backends[account_id][region_name]
        stage_name = properties.get("StageName") or resource_name
        backend.create_stage(
            function_id=properties["RestApiId"],
            stage_name=stage_name,
            deploymentId=properties.get("DeploymentId", ""),
            variables=properties.get("Variables") or {},
            description=properties.get("Description", ""),
            cacheClusterEnabled=properties.get("CacheClusterEnabled"),
            cacheClusterSize=properties.get("CacheClusterSize"),
            tags=tags_as_dict(properties.get("Tags")) or None,
            tracing_enabled=properties.get("TracingEnabled"),
        )
        return cls(properties["RestApiId"], stage_name, account_id, region_name)

    def _needs_replacement(self, properties: Properties, account_id: str, region_name: str) -> bool:
        return bool(
            (properties.get("StageName") or self.stage_name) != self.stage_name
            or properties["RestApiId"] != self.rest_api_id
        )

    def _update_in_place(self, properties: Properties, account_id: str, region_name: str) -> None:
        backend = apigateway_models.apigateway_backends[account_id][region_name]
        stage = backend.get_stage(self.rest_api_id, self.stage_name)
        stage.deployment_id = properties.get("DeploymentId")
        stage.variables = properties.get("Variables") or {}
        stage.description = properties.get("Description", "")
        stage.tracing_enabled = properties.get("TracingEnabled")

    def delete(self, account_id: str, region_name: str) -> None:
        backend = apigateway_models.apigateway_backends[account_id][region_name]
        backend.delete_stage(self.rest_api_id, self.stage_name)


def install() -> None:
    RestAPI = apigateway_models.RestAPI
    Deployment = apigateway_models.Deployment
    patch(RestAPI, "create_from_cloudformation_json", created_from_properties(rest_api_create))
    patch(RestAPI, "update_from_cloudformation_json", updated_or_replaced(rest_api_update))
    patch(RestAPI, "delete", rest_api_delete)
    patch(Deployment, "create_from_cloudformation_json", created_from_properties(deployment_create))
    patch(Deployment, "physical_resource_id", property(lambda self: self.id))
    patch(Deployment, "delete", deployment_delete)
