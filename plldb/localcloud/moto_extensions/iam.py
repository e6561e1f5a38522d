"""IAM as CloudFormation manages it: AWS::IAM::Role and ::ManagedPolicy, with AWS managed policies offline.

Gap 1: ManagedPolicyArns were ignored, inline policies stored as objects, updates and deletes incomplete.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from moto.iam import models as iam_models
from moto.utilities.utils import get_partition

from plldb.localcloud.moto_extensions.core import (
    Properties,
    ReplacementCheck,
    as_classmethod,
    created_from_properties,
    original,
    patch,
    tags_as_list,
    updated_or_replaced,
)
from plldb.localcloud.moto_extensions.templates import aws_managed_policies


def _iam(account_id: str, region_name: str) -> Any:
    return iam_models.iam_backends[account_id][get_partition(region_name)]


def _policy_text(document: Any) -> str:
    return document if isinstance(document, str) else json.dumps(document)


def ensure_managed_policy(iam_backend: Any, policy_arn: str) -> None:
    """Make an AWS managed policy known to moto's IAM the first time something attaches it.

    Gap: moto loads AWS managed policies only with MOTO_IAM_LOAD_MANAGED_POLICIES (slow for every
    account), so attaching arn:aws:iam::aws:policy/... failed with NoSuchEntity.
    """
    if policy_arn in iam_backend.managed_policies:
        return
    match = re.match(r"^arn:[^:]+:iam::aws:policy(/.*/|/)([^/]+)$", policy_arn)
    if not match:
        return
    data = aws_managed_policies().get(match.group(2))
    if data is None or data.get("Path", "/") != match.group(1):
        return
    policy = iam_models.AWSManagedPolicy.from_data(
        match.group(2), iam_backend.account_id, iam_backend.region_name, data
    )
    iam_backend.managed_policies[policy.arn] = policy
    iam_backend.aws_managed_policies.append(policy)


def _attach_role_policies(
    role: Any, properties: Mapping[str, Any], account_id: str, region_name: str
) -> None:
    iam_backend = _iam(account_id, region_name)
    wanted_inline = {
        policy["PolicyName"]: _policy_text(policy["PolicyDocument"])
        for policy in properties.get("Policies") or []
    }
    for name in list(role.policies):
        if name not in wanted_inline:
            role.delete_policy(name)
    for name, document in wanted_inline.items():
        role.put_policy(name, document)
    wanted_managed = list(dict.fromkeys(properties.get("ManagedPolicyArns") or []))
    for arn in list(role.managed_policies):
        if arn not in wanted_managed:
            iam_backend.detach_role_policy(arn, role.name)
    for arn in wanted_managed:
        if arn not in role.managed_policies:
            ensure_managed_policy(iam_backend, arn)
            iam_backend.attach_role_policy(arn, role.name)


def renamed_or_moved(name_property: str) -> ReplacementCheck:
    """IAM cannot rename a role or policy, nor move it to another path: both mean a replacement."""

    def replaced(entity: Any, properties: Properties, account_id: str, region_name: str) -> bool:
        renamed = (properties.get(name_property) or entity.name) != entity.name
        return renamed or properties.get("Path", "/") != entity.path

    return replaced


def role_create(
    cls: Any, resource_name: str, properties: Properties, account_id: str, region_name: str
) -> Any:
    role = _iam(account_id, region_name).create_role(
        role_name=properties.get("RoleName") or resource_name,
        assume_role_policy_document=_policy_text(properties["AssumeRolePolicyDocument"]),
        path=properties.get("Path", "/"),
        permissions_boundary=properties.get("PermissionsBoundary", ""),
        description=properties.get("Description", ""),
        tags=tags_as_list(properties.get("Tags")),
        max_session_duration=properties.get("MaxSessionDuration", 3600),
    )
    _attach_role_policies(role, properties, account_id, region_name)
    return role


def role_update(role: Any, properties: Properties, account_id: str, region_name: str) -> Any:
    role.assume_role_policy_document = _policy_text(properties["AssumeRolePolicyDocument"])
    role.description = properties.get("Description", "")
    role.max_session_duration = properties.get("MaxSessionDuration", 3600)
    role.permissions_boundary_arn = properties.get("PermissionsBoundary") or None
    role.tags = tags_as_list(properties.get("Tags"))
    _attach_role_policies(role, properties, account_id, region_name)
    return role


def role_delete(
    cls: Any, resource_name: str, cloudformation_json: Any, account_id: str, region_name: str
) -> None:
    iam_backend = _iam(account_id, region_name)
    role = iam_backend.get_role(resource_name)
    for arn in list(role.managed_policies):
        iam_backend.detach_role_policy(arn, role.name)
    role.policies.clear()
    for profile in iam_backend.instance_profiles.values():
        profile.roles = [r for r in profile.roles if r.name != resource_name]
    iam_backend.delete_role(resource_name)


def policy_create(
    cls: Any, resource_name: str, properties: Properties, account_id: str, region_name: str
) -> Any:
    policy_json = {"Properties": {**properties, "Tags": tags_as_list(properties.get("Tags"))}}
    policy = original(iam_models.ManagedPolicy, "create_from_cloudformation_json").__func__(
        cls, resource_name, policy_json, account_id, region_name
    )
    policy.plldb_roles = set(properties.get("Roles") or [])  # the roles this stack attached it to
    return policy


def policy_update(policy: Any, properties: Properties, account_id: str, region_name: str) -> Any:
    iam_backend = _iam(account_id, region_name)
    document = _policy_text(properties.get("PolicyDocument"))
    if document != next(v.document for v in policy.versions if v.is_default):
        for version in [v for v in policy.versions if not v.is_default][: max(0, len(policy.versions) - 4)]:
            iam_backend.delete_policy_version(policy.arn, version.version_id)
        iam_backend.create_policy_version(policy.arn, document, set_as_default=True)
    policy.description = properties.get("Description", policy.description)
    wanted_roles = set(properties.get("Roles") or [])
    for role in list(iam_backend.roles.values()):
        attached = policy.arn in role.managed_policies
        if attached and role.name not in wanted_roles and role.name in policy.plldb_roles:
            iam_backend.detach_role_policy(policy.arn, role.name)
        elif not attached and role.name in wanted_roles:
            iam_backend.attach_role_policy(policy.arn, role.name)
    policy.plldb_roles = wanted_roles
    return policy


def policy_delete(self: Any, account_id: str, region_name: str) -> None:
    iam_backend = _iam(account_id, region_name)
    for holder in [
        *iam_backend.roles.values(),
        *iam_backend.users.values(),
        *iam_backend.groups.values(),
    ]:
        if self.arn in holder.managed_policies:
            self.detach_from(holder)
    iam_backend.delete_policy(self.arn)


def install() -> None:
    Role = iam_models.Role
    ManagedPolicy = iam_models.ManagedPolicy
    patch(Role, "create_from_cloudformation_json", created_from_properties(role_create))
    patch(
        Role,
        "update_from_cloudformation_json",
        updated_or_replaced(role_update, renamed_or_moved("RoleName")),
    )
    patch(Role, "delete_from_cloudformation_json", as_classmethod(role_delete))
    patch(ManagedPolicy, "create_from_cloudformation_json", created_from_properties(policy_create))
    patch(
        ManagedPolicy,
        "update_from_cloudformation_json",
        updated_or_replaced(policy_update, renamed_or_moved("ManagedPolicyName")),
    )
    patch(ManagedPolicy, "delete", policy_delete)
