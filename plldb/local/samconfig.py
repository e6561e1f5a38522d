"""Defaults for `plldb attach` from the project's SAM CLI configuration file.

Developers already tell `sam deploy` which stack, template, region and profile they use; reading
the same file means `plldb attach` works with no options in a SAM project directory.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from plldb.errors import PlldbError

CONFIG_FILE_NAMES = ("samconfig.toml", "samconfig.yaml", "samconfig.yml")
DEFAULT_ENVIRONMENT = "default"

# Sections are merged left to right, later ones winning. The stack, region and profile are those
# `sam deploy` used; the template is the source template `sam build` reads (deploy's may be a
# packaged copy whose code paths point into .aws-sam/).
DEPLOYMENT_SECTIONS = ("global", "sync", "deploy")
TEMPLATE_SECTIONS = ("global", "deploy", "sync", "build")
TEMPLATE_KEYS = ("template_file", "template")


@dataclass(frozen=True)
class SamConfig:
    """The values plldb uses from a SAM configuration file; None where the file does not say."""

    path: Path | None = None
    stack_name: str | None = None
    template: Path | None = None
    region: str | None = None
    profile: str | None = None


def find_config_file(directory: Path) -> Path | None:
    """The configuration file SAM CLI would read in ``directory`` (TOML first, then YAML)."""
    for name in CONFIG_FILE_NAMES:
        candidate = directory / name
        if candidate.is_file():
            return candidate
    return None


def load_samconfig(
    directory: Path, environment: str = DEFAULT_ENVIRONMENT, sections: tuple[str, ...] = TEMPLATE_SECTIONS
) -> SamConfig:
    """Read the SAM configuration in ``directory``; an absent file gives an empty SamConfig."""
    path = find_config_file(directory)
    if path is None:
        return SamConfig()
    return parse_samconfig(path, environment, sections)


def parse_samconfig(
    path: Path, environment: str = DEFAULT_ENVIRONMENT, sections: tuple[str, ...] = TEMPLATE_SECTIONS
) -> SamConfig:
    """Parse one configuration file; a malformed file is a PlldbError naming it.

    ``sections``: the commands whose ``template_file`` counts, later ones winning (`sam local invoke`
    reads its own section, ``local_invoke``).
    """
    document = _read_document(path)
    env_section = document.get(environment, {})
    if not isinstance(env_section, Mapping):
        raise PlldbError(
            f"{path}: [{environment}] must be a table of commands.", "Fix the file or remove it."
        )
    deployment = _merged_parameters(path, environment, env_section, DEPLOYMENT_SECTIONS)
    template_parameters = _merged_parameters(path, environment, env_section, sections)
    template_value = next(
        (template_parameters[key] for key in TEMPLATE_KEYS if key in template_parameters), None
    )
    template = None
    if template_value is not None:
        template = Path(_string(path, "template_file", template_value))
        if not template.is_absolute():
            template = path.parent / template
    return SamConfig(
        path=path,
        stack_name=_optional_string(path, deployment, "stack_name"),
        template=template,
        region=_optional_string(path, deployment, "region"),
        profile=_optional_string(path, deployment, "profile"),
    )


def _read_document(path: Path) -> Mapping[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PlldbError(f"Cannot read {path}: {exc.strerror}.", "Check the file's permissions.")
    try:
        document = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise PlldbError(f"{path} is not valid: {first_line}.", "Fix the file or remove it.")
    if document is None:
        return {}
    if not isinstance(document, Mapping):
        raise PlldbError(f"{path} must contain a table of environments.", "Fix the file or remove it.")
    return document


def _merged_parameters(
    path: Path, environment: str, env_section: Mapping[str, Any], commands: tuple[str, ...]
) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for command in commands:
        command_section = env_section.get(command, {})
        parameters = command_section.get("parameters", {}) if isinstance(command_section, Mapping) else None
        if not isinstance(parameters, Mapping):
            raise PlldbError(
                f"{path}: [{environment}.{command}.parameters] must be a table.", "Fix the file."
            )
        merged.update(parameters)
    return merged


def _optional_string(path: Path, parameters: Mapping[str, Any], key: str) -> str | None:
    value = parameters.get(key)
    return None if value is None else _string(path, key, value)


def _string(path: Path, key: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise PlldbError(f"{path}: {key} must be a non-empty string, not {value!r}.", "Fix the file.")
    return value.strip()
