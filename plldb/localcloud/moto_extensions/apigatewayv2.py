"""API Gateway v2: AWS::ApiGatewayV2::* (gap 1: none of them existed; the helper stack's WebSocket API was
skipped), WebSocket endpoints as wss://, stages that report their deployment, GetAuthorizers."""

from __future__ import annotations

import json
import logging
import string
from abc import abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar

from moto.apigatewayv2 import models as apigatewayv2_models
from moto.apigatewayv2 import responses as apigatewayv2_responses
from moto.core.common_models import CloudFormationModel
from moto.moto_api._internal import mock_random

from plldb.localcloud.moto_extensions.apigateway import api_document
from plldb.localcloud.moto_extensions.core import (
    LocalModel,
    Properties,
    UpdatableModel,
    camel,
    camel_values,
    original,
    patch,
    tags_as_dict,
)

LOG = logging.getLogger(__name__)


def _v2(account_id: str, region_name: str) -> Any:
    return apigatewayv2_models.apigatewayv2_backends[account_id][region_name]


def _endpoint(api: Any, region_name: str) -> str:
    scheme = "wss" if api.protocol_type == "WEBSOCKET" else "https"
    return f"{scheme}://{api.api_id}.execute-api.{region_name}.amazonaws.com"


def _random_id(length: int = 6) -> str:
    return "".join(mock_random.choice(string.ascii_lowercase + string.digits) for _ in range(length))


class GatewayApi(UpdatableModel, CloudFormationModel):
    """AWS::ApiGatewayV2::Api. Ref = ApiId; GetAtt ApiEndpoint (wss:// for WebSocket APIs) and ApiId."""

    RESOURCE_TYPE = "AWS::ApiGatewayV2::Api"
    NAME_PROPERTY = "Name"
    PHYSICAL_ID = "api_id"
    ATTRIBUTES = {"ApiEndpoint": "api_endpoint", "ApiId": "api_id"}

    def __init__(self, api_id: str, endpoint: str) -> None:
        self.api_id = api_id
        self.api_endpoint = endpoint

    @staticmethod
    def _settings(properties: Properties) -> dict[str, Any]:
        """The keyword arguments CreateApi and UpdateApi share."""
        return {
            "api_key_selection_expression": properties.get("ApiKeySelectionExpression"),
            "cors_configuration": camel(properties.get("CorsConfiguration")),
            "description": properties.get("Description"),
            "disable_schema_validation": properties.get("DisableSchemaValidation"),
            "disable_execute_api_endpoint": properties.get("DisableExecuteApiEndpoint"),
            "route_selection_expression": properties.get("RouteSelectionExpression"),
            "version": properties.get("Version"),
        }

    @classmethod
    def _create(
        cls, resource_name: str, properties: Properties, account_id: str, region_name: str
    ) -> GatewayApi:
        document = api_document(properties, account_id, region_name)
        backend = _v2(account_id, region_name)
        api = backend.create_api(
            **cls._settings(properties),
            name=properties.get("Name") or ((document or {}).get("info") or {}).get("title") or resource_name,
            protocol_type=properties.get("ProtocolType") or "HTTP",
            tags=tags_as_dict(properties.get("Tags")),
        )
        if document is not None:
            backend.reimport_api(api.api_id, json.dumps(document), bool(properties.get("FailOnWarnings")))
        if properties.get("Target"):
            cls._quick_create(backend, api.api_id, properties)
        return cls(api.api_id, _endpoint(api, region_name))

    @staticmethod
    def _quick_create(backend: Any, api_id: str, properties: Mapping[str, Any]) -> None:
        """Target + RouteKey on an HTTP API: one Lambda proxy integration, its route and the $default stage."""
        integration = backend.create_integration(
            api_id=api_id,
            **{
                **GatewayIntegration._arguments({"IntegrationType": "AWS_PROXY"}),
                "integration_uri": properties["Target"],
            },
        )
        integration.payload_format_version = "2.0"
        integration.credentials_arn = properties.get("CredentialsArn")
        backend.create_route(
            api_id=api_id,
            **GatewayRoute._arguments(
                {
                    "RouteKey": properties.get("RouteKey") or "$default",
                    "Target": f"integrations/{integration.id}",
                }
            ),
        )
        backend.create_stage(api_id, {"stageName": "$default", "autoDeploy": True})

    def _needs_replacement(self, properties: Properties, account_id: str, region_name: str) -> bool:
        api = _v2(account_id, region_name).get_api(self.api_id)
        return bool((properties.get("ProtocolType") or "HTTP") != api.protocol_type)

    def _update_in_place(self, properties: Properties, account_id: str, region_name: str) -> None:
        document = api_document(properties, account_id, region_name)
        backend = _v2(account_id, region_name)
        backend.update_api(self.api_id, **self._settings(properties), name=properties.get("Name"))
        if document is not None:
            backend.reimport_api(self.api_id, json.dumps(document), bool(properties.get("FailOnWarnings")))

    def delete(self, account_id: str, region_name: str) -> None:
        _v2(account_id, region_name).delete_api(self.api_id)


class _ApiChild(UpdatableModel):
    """A resource of one API (its ApiId), replaced when the ApiId changes. By default it is created,
    read and deleted through the apigatewayv2 backend's create_/get_/delete_<BACKEND_NOUN> operations
    with the keyword arguments of _arguments, and updated by setting those on the backend's object."""

    PHYSICAL_ID = "resource_id"
    BACKEND_NOUN: ClassVar[str]
    CREATED_ID: ClassVar[str] = "id"  # the attribute holding the id of what create_<noun> returns

    def __init__(self, api_id: str, resource_id: str) -> None:
        self.api_id = api_id
        self.resource_id = resource_id

    @staticmethod
    @abstractmethod
    def _arguments(properties: Mapping[str, Any]) -> dict[str, Any]:
        """The backend's keyword arguments (besides api_id) for these properties."""

    @classmethod
    def _create(cls, resource_name: str, properties: Properties, account_id: str, region_name: str) -> Any:
        create = getattr(_v2(account_id, region_name), f"create_{cls.BACKEND_NOUN}")
        created = create(api_id=properties["ApiId"], **cls._arguments(properties))
        return cls(properties["ApiId"], getattr(created, cls.CREATED_ID))

    def _needs_replacement(self, properties: Properties, account_id: str, region_name: str) -> bool:
        return bool(properties["ApiId"] != self.api_id)

    def _update_in_place(self, properties: Properties, account_id: str, region_name: str) -> None:
        get = getattr(_v2(account_id, region_name), f"get_{self.BACKEND_NOUN}")
        current = get(self.api_id, self.resource_id)
        for name, value in self._arguments(properties).items():
            setattr(current, name, value)

    def delete(self, account_id: str, region_name: str) -> None:
        getattr(_v2(account_id, region_name), f"delete_{self.BACKEND_NOUN}")(self.api_id, self.resource_id)


class GatewayRoute(_ApiChild, CloudFormationModel):
    """AWS::ApiGatewayV2::Route. Ref = RouteId."""

    RESOURCE_TYPE = "AWS::ApiGatewayV2::Route"
    ATTRIBUTES = {"RouteId": "resource_id"}
    BACKEND_NOUN = "route"
    CREATED_ID = "route_id"

    @staticmethod
    def _arguments(properties: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "api_key_required": bool(properties.get("ApiKeyRequired", False)),
            "authorization_scopes": list(properties.get("AuthorizationScopes") or []),
            "authorization_type": properties.get("AuthorizationType", "NONE"),
            "authorizer_id": properties.get("AuthorizerId"),
            "model_selection_expression": properties.get("ModelSelectionExpression"),
            "operation_name": properties.get("OperationName"),
            "request_models": properties.get("RequestModels"),
            "request_parameters": camel_values(properties.get("RequestParameters")),
            "route_key": properties["RouteKey"],
            "route_response_selection_expression": properties.get("RouteResponseSelectionExpression"),
            "target": properties.get("Target"),
        }


class GatewayRouteResponse(LocalModel, CloudFormationModel):
    """AWS::ApiGatewayV2::RouteResponse (two-way WebSocket routes). Ref = RouteResponseId.

    It has no update: CloudFormation's updates replace it (create the new one, delete the old)."""

    RESOURCE_TYPE = "AWS::ApiGatewayV2::RouteResponse"
    PHYSICAL_ID = "route_response_id"
    ATTRIBUTES = {"RouteResponseId": "route_response_id"}

    def __init__(self, api_id: str, route_id: str, route_response_id: str) -> None:
        self.api_id = api_id
        self.route_id = route_id
        self.route_response_id = route_response_id

    @classmethod
    def _create(
        cls, resource_name: str, properties: Properties, account_id: str, region_name: str
    ) -> GatewayRouteResponse:
        response = _v2(account_id, region_name).create_route_response(
            api_id=properties["ApiId"],
            route_id=properties["RouteId"],
            route_response_key=properties["RouteResponseKey"],
            model_selection_expression=properties.get("ModelSelectionExpression"),
            response_models=properties.get("ResponseModels"),
        )
        return cls(properties["ApiId"], properties["RouteId"], response.id)

    def delete(self, account_id: str, region_name: str) -> None:
        try:
            _v2(account_id, region_name).delete_route_response(
                self.api_id, self.route_id, self.route_response_id
            )
        except Exception as exc:
            LOG.debug("route response %s was already gone with its route: %s", self.route_response_id, exc)


class GatewayIntegration(_ApiChild, CloudFormationModel):
    """AWS::ApiGatewayV2::Integration. Ref = IntegrationId."""

    RESOURCE_TYPE = "AWS::ApiGatewayV2::Integration"
    ATTRIBUTES = {"IntegrationId": "resource_id"}
    BACKEND_NOUN = "integration"

    @staticmethod
    def _arguments(properties: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "connection_id": properties.get("ConnectionId"),
            "connection_type": properties.get("ConnectionType", "INTERNET"),
            "content_handling_strategy": properties.get("ContentHandlingStrategy"),
            "credentials_arn": properties.get("CredentialsArn"),
            "description": properties.get("Description"),
            "integration_method": properties.get("IntegrationMethod"),
            "integration_subtype": properties.get("IntegrationSubtype"),
            "integration_type": properties["IntegrationType"],
            "integration_uri": properties.get("IntegrationUri"),
            "passthrough_behavior": properties.get("PassthroughBehavior"),
            "payload_format_version": properties.get("PayloadFormatVersion"),
            "request_parameters": properties.get("RequestParameters"),
            "request_templates": properties.get("RequestTemplates"),
            "response_parameters": properties.get("ResponseParameters"),
            "template_selection_expression": properties.get("TemplateSelectionExpression"),
            "timeout_in_millis": properties.get("TimeoutInMillis"),
            "tls_config": camel(properties.get("TlsConfig")),
        }

    def _update_in_place(self, properties: Properties, account_id: str, region_name: str) -> None:
        api = _v2(account_id, region_name).get_api(self.api_id)
        previous = api.get_integration(self.resource_id)
        integration = apigatewayv2_models.Integration(**self._arguments(properties))
        # Keep the id (routes target "integrations/{id}") and the integration responses.
        integration.id = previous.id
        integration.responses = previous.responses
        api.integrations[integration.id] = integration


class GatewayAuthorizer(_ApiChild, CloudFormationModel):
    """AWS::ApiGatewayV2::Authorizer. Ref = AuthorizerId."""

    RESOURCE_TYPE = "AWS::ApiGatewayV2::Authorizer"
    ATTRIBUTES = {"AuthorizerId": "resource_id"}
    BACKEND_NOUN = "authorizer"

    @staticmethod
    def _arguments(properties: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "auth_creds_arn": properties.get("AuthorizerCredentialsArn"),
            "auth_payload_format_version": properties.get("AuthorizerPayloadFormatVersion"),
            "auth_result_ttl": properties.get("AuthorizerResultTtlInSeconds"),
            "authorizer_type": properties["AuthorizerType"],
            "authorizer_uri": properties.get("AuthorizerUri"),
            "enable_simple_response": properties.get("EnableSimpleResponses"),
            "identity_source": list(properties.get("IdentitySource") or []),
            "identity_validation_expr": properties.get("IdentityValidationExpression"),
            "jwt_config": camel(properties.get("JwtConfiguration")),
            "name": properties["Name"],
        }


class GatewayDeployment(_ApiChild, CloudFormationModel):
    """AWS::ApiGatewayV2::Deployment. Ref = DeploymentId. moto's apigatewayv2 has no deployments: kept on the API."""

    RESOURCE_TYPE = "AWS::ApiGatewayV2::Deployment"
    ATTRIBUTES = {"DeploymentId": "resource_id"}

    @staticmethod
    def _record(
        account_id: str, region_name: str, api_id: str, deployment_id: str, properties: Mapping[str, Any]
    ) -> None:
        api = _v2(account_id, region_name).get_api(api_id)
        deployments = api.__dict__.setdefault("deployments", {})
        deployments[deployment_id] = {
            "deploymentId": deployment_id,
            "description": properties.get("Description"),
        }
        stage_name = properties.get("StageName")
        if stage_name and stage_name in api.stages:
            api.stages[stage_name].deployment_id = deployment_id

    @classmethod
    def _create(
        cls, resource_name: str, properties: Properties, account_id: str, region_name: str
    ) -> GatewayDeployment:
        deployment_id = _random_id()
        cls._record(account_id, region_name, properties["ApiId"], deployment_id, properties)
        return cls(properties["ApiId"], deployment_id)

    def _update_in_place(self, properties: Properties, account_id: str, region_name: str) -> None:
        self._record(account_id, region_name, self.api_id, self.resource_id, properties)

    def delete(self, account_id: str, region_name: str) -> None:
        try:
            api = _v2(account_id, region_name).get_api(self.api_id)
        except Exception:
            return  # deleted with its API
        api.__dict__.get("deployments", {}).pop(self.resource_id, None)


class GatewayStage(_ApiChild, CloudFormationModel):
    """AWS::ApiGatewayV2::Stage. Ref = StageName."""

    RESOURCE_TYPE = "AWS::ApiGatewayV2::Stage"
    NAME_PROPERTY = "StageName"
    BACKEND_NOUN = "stage"

    @staticmethod
    def _config(properties: Mapping[str, Any], stage_name: str) -> dict[str, Any]:
        config: dict[str, Any] = {
            "stageName": stage_name,
            "autoDeploy": properties.get("AutoDeploy"),
            "description": properties.get("Description"),
            "clientCertificateId": properties.get("ClientCertificateId"),
            "stageVariables": dict(properties.get("StageVariables") or {}),
            "tags": tags_as_dict(properties.get("Tags")),
            "routeSettings": camel_values(properties.get("RouteSettings")),
        }
        if properties.get("DefaultRouteSettings"):
            config["defaultRouteSettings"] = camel(properties["DefaultRouteSettings"])
        if properties.get("AccessLogSettings"):
            config["accessLogSettings"] = camel(properties["AccessLogSettings"])
        return config

    @classmethod
    def _create(
        cls, resource_name: str, properties: Properties, account_id: str, region_name: str
    ) -> GatewayStage:
        stage_name = properties.get("StageName") or resource_name
        stage = _v2(account_id, region_name).create_stage(
            properties["ApiId"], cls._config(properties, stage_name)
        )
        stage.deployment_id = properties.get("DeploymentId")
        return cls(properties["ApiId"], stage_name)

    def _needs_replacement(self, properties: Properties, account_id: str, region_name: str) -> bool:
        renamed = (properties.get("StageName") or self.resource_id) != self.resource_id
        return renamed or super()._needs_replacement(properties, account_id, region_name)

    def _update_in_place(self, properties: Properties, account_id: str, region_name: str) -> None:
        api = _v2(account_id, region_name).get_api(self.api_id)
        stage: Any = apigatewayv2_models.Stage(api, self._config(properties, self.resource_id))
        stage.created = api.stages[self.resource_id].created
        stage.deployment_id = properties.get("DeploymentId")
        api.stages[self.resource_id] = stage

    def delete(self, account_id: str, region_name: str) -> None:
        try:
            super().delete(account_id, region_name)
        except Exception as exc:
            LOG.debug("stage %s was already gone with its API: %s", self.resource_id, exc)


# --- moto's own API objects (also outside CloudFormation) --------------------------------------------------
def api_init(self: Any, region: str, *args: Any, **kwargs: Any) -> None:
    original(apigatewayv2_models.Api, "__init__")(self, region, *args, **kwargs)
    self.api_endpoint = _endpoint(self, region)


def stage_init(self: Any, api: Any, config: dict[str, Any]) -> None:
    original(apigatewayv2_models.Stage, "__init__")(self, api, config)
    self.deployment_id = config.get("deploymentId")


def stage_json(self: Any) -> dict[str, Any]:
    data = original(apigatewayv2_models.Stage, "to_json")(self)
    if getattr(self, "deployment_id", None):
        data["deploymentId"] = self.deployment_id
    return data


def get_authorizers(self: Any) -> tuple[int, dict[str, str], str]:
    # Gap: GetAuthorizers (list) was not implemented, only GetAuthorizer.
    api = self.apigatewayv2_backend.get_api(self.path.split("/")[-2])
    return (
        200,
        {},
        json.dumps({"items": [authorizer.to_json() for authorizer in api.authorizers.values()]}),
    )


def install() -> None:
    """WebSocket APIs' endpoint is wss://, and stages report their deployment (gap 1, also outside CloudFormation)."""
    patch(apigatewayv2_responses.ApiGatewayV2Response, "get_authorizers", get_authorizers)
    patch(apigatewayv2_models.Api, "__init__", api_init)
    patch(apigatewayv2_models.Stage, "__init__", stage_init)
    patch(apigatewayv2_models.Stage, "to_json", stage_json)
