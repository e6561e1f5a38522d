"""Template and document text as plain data, shared by `sam deploy` and the moto extensions."""

from __future__ import annotations

import json
from typing import Any

import cfn_flip


def parse_json_or_yaml(text: str) -> Any:
    """Template text as plain data: JSON, else YAML with CloudFormation's short-form tags in long form
    (cfn-flip splits `!GetAtt Child.Outputs.Name` at the first dot, as CloudFormation does)."""
    try:
        data = json.loads(text)
    except ValueError:
        data = cfn_flip.load_yaml(text)
    return plain_data(data)


def plain_data(value: Any) -> Any:
    """Dicts, lists and scalars only (YAML dates become ISO text, ordered dicts plain dicts)."""
    if isinstance(value, dict):
        return {str(key): plain_data(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [plain_data(item) for item in value]
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value
