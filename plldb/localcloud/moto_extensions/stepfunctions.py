"""Step Functions: AWS::StepFunctions::StateMachine (what AWS::Serverless::StateMachine becomes).

Gap 6: Definition, DefinitionS3Location and DefinitionSubstitutions (all used by SAM) were ignored.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from moto.stepfunctions import models as stepfunctions_models
from moto.utilities.utils import get_partition

from plldb.localcloud.moto_extensions import stepfunctions_executions
from plldb.localcloud.moto_extensions.core import (
    Properties,
    as_classmethod,
    camel,
    created_from_properties,
    original,
    patch,
    tags_as_dict,
    updated_or_replaced,
)
from plldb.localcloud.moto_extensions.templates import parse_template_text


def _state_machine_definition(properties: Mapping[str, Any], account_id: str, region_name: str) -> str:
    """DefinitionString, Definition or DefinitionS3Location, with DefinitionSubstitutions applied."""
    if "Definition" in properties:
        text = json.dumps(properties["Definition"])
    elif isinstance(properties.get("DefinitionS3Location"), dict):
        from moto.s3.models import s3_backends

        location = properties["DefinitionS3Location"]
        key = s3_backends[account_id][get_partition(region_name)].get_object(
            location["Bucket"], location["Key"]
        )
        text = key.value.decode("utf-8")  # type: ignore[union-attr]
        if not text.lstrip().startswith("{"):
            text = json.dumps(parse_template_text(text))
    else:
        text = str(properties.get("DefinitionString", ""))
    for name, value in (properties.get("DefinitionSubstitutions") or {}).items():
        text = text.replace("${" + name + "}", str(value))
    return text


def _backend(account_id: str, region_name: str) -> Any:
    # The backend that runs executions (stepfunctions_executions), which every request also reaches.
    return stepfunctions_executions.backends()[account_id][region_name]


def state_machine_create(
    cls: Any, resource_name: str, properties: Properties, account_id: str, region_name: str
) -> Any:
    return _backend(account_id, region_name).create_state_machine(
        properties.get("StateMachineName") or resource_name,
        _state_machine_definition(properties, account_id, region_name),
        properties.get("RoleArn", ""),
        tags=[{"key": key, "value": value} for key, value in tags_as_dict(properties.get("Tags")).items()],
        loggingConfiguration=camel(properties.get("LoggingConfiguration")),
        tracingConfiguration=camel(properties.get("TracingConfiguration")),
        sm_type=properties.get("StateMachineType"),
    )


def state_machine_renamed(machine: Any, properties: Properties, account_id: str, region_name: str) -> bool:
    return bool((properties.get("StateMachineName") or machine.name) != machine.name)


def state_machine_update(machine: Any, properties: Properties, account_id: str, region_name: str) -> Any:
    return _backend(account_id, region_name).update_state_machine(
        machine.arn,
        definition=_state_machine_definition(properties, account_id, region_name),
        role_arn=properties.get("RoleArn"),
        logging_configuration=camel(properties.get("LoggingConfiguration")),
        tracing_configuration=camel(properties.get("TracingConfiguration")),
    )


def state_machine_attribute(self: Any, attribute_name: str) -> Any:
    if attribute_name == "Arn":
        return self.arn
    return original(stepfunctions_models.StateMachine, "get_cfn_attribute")(self, attribute_name)


def install() -> None:
    StateMachine = stepfunctions_models.StateMachine
    patch(StateMachine, "create_from_cloudformation_json", created_from_properties(state_machine_create))
    patch(
        StateMachine,
        "update_from_cloudformation_json",
        updated_or_replaced(state_machine_update, state_machine_renamed),
    )
    patch(StateMachine, "get_cfn_attribute", state_machine_attribute)
    patch(
        StateMachine,
        "has_cfn_attr",
        as_classmethod(lambda cls, attr: attr in ("Arn", "Name", "StateMachineName")),
    )
