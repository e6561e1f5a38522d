"""From a SAM template to the local source of each function.

Each AWS::Serverless::Function (and AWS::Lambda::Function with a local ``Code`` folder) maps to its
CodeUri folder, Handler, Runtime, template-declared environment, local layers, timeout and memory.
``Globals`` are merged by aws-sam-translator's own implementation, so the result is what SAM deploys.
Nested applications (AWS::Serverless::Application / AWS::CloudFormation::Stack with a local template)
are followed; their functions are named "App/Function". A function that cannot run locally (code in
S3, inline code, a container image, not Python) is reported with the reason instead of failing.
"""

from __future__ import annotations

import copy
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from plldb.errors import PlldbError

SERVERLESS_FUNCTION = "AWS::Serverless::Function"
LAMBDA_FUNCTION = "AWS::Lambda::Function"
SERVERLESS_LAYER = "AWS::Serverless::LayerVersion"
LAMBDA_LAYER = "AWS::Lambda::LayerVersion"
SERVERLESS_APPLICATION = "AWS::Serverless::Application"
CLOUDFORMATION_STACK = "AWS::CloudFormation::Stack"
MAX_NESTING = 10
TEMPLATE_FIX = "Correct the template and run the command again."
REMOTE_PREFIXES = ("s3://", "http://", "https://")


@dataclass(frozen=True)
class LocalFunction:
    """A function of the template whose source is on this machine."""

    logical_id: str  # "HelloFunction"; inside nested apps "App/HelloFunction"
    code_dir: Path  # absolute CodeUri folder
    handler: str  # "app.lambda_handler"
    runtime: str | None  # "python3.13"
    environment: dict[str, str]  # template-declared variables (Globals merged); intrinsic values left out
    layer_dirs: list[Path]  # local layers' folders, in template order
    timeout: int | None
    memory_size: int | None
    template_dir: Path | None = None  # folder of the top-level template: where the project's .venv is


@dataclass(frozen=True)
class TemplateFunctions:
    """Every function of a template: those that can run locally and, for the others, why not."""

    local: dict[str, LocalFunction] = field(default_factory=dict)
    unavailable: dict[str, str] = field(
        default_factory=dict
    )  # logical id -> reason ("runtime nodejs20.x is not Python")


def load_local_functions(template_path: Path) -> dict[str, LocalFunction]:
    """The functions with local source, keyed by logical id (nested: "App/Func")."""
    return scan_template(template_path).local


def scan_template(template_path: Path) -> TemplateFunctions:
    """All functions of the template and its local nested applications."""
    template_path = Path(template_path).absolute()
    result = TemplateFunctions()
    _scan(template_path, "", template_path.parent, result, [])
    return result


def nested_application_templates(template_path: Path) -> dict[str, Path]:
    """Logical id of each nested application or stack with a local template -> that template."""
    template_path = Path(template_path).absolute()
    resources = _resources(read_template(template_path), template_path)
    nested = {}
    for logical_id, resource in resources.items():
        location = _nested_location(resource, template_path.parent)
        if isinstance(location, Path):
            nested[logical_id] = location
    return nested


# --- Reading ---------------------------------------------------------------------------------------
def read_template(path: Path) -> dict[str, Any]:
    """The template as plain data; intrinsic functions (!Ref, !Sub, ...) become their long form."""
    import yaml
    from cfn_tools import load_json, load_yaml

    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PlldbError(
            f"Template {path} was not found.", "Pass --template with the path of your SAM template."
        )
    except (OSError, UnicodeDecodeError) as exc:
        raise PlldbError(f"Cannot read template {path}: {exc}.")
    if text.lstrip().startswith("{"):
        try:
            data = load_json(text)
        except json.JSONDecodeError as exc:
            raise PlldbError(
                f"{path}, line {exc.lineno}: invalid JSON: {exc.msg} (column {exc.colno}).", TEMPLATE_FIX
            )
    else:
        try:
            data = load_yaml(text)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line = f", line {mark.line + 1}" if mark is not None else ""
            problem = exc.problem or exc.context or "invalid YAML"
            raise PlldbError(f"{path}{line}: invalid YAML: {problem}.", TEMPLATE_FIX)
        except Exception as exc:
            raise PlldbError(f"{path}: invalid YAML: {exc}.", TEMPLATE_FIX)
    if not isinstance(data, dict):
        raise PlldbError(
            f"{path} is not a CloudFormation template: its top level is not a mapping.",
            "Point --template at your SAM template.",
        )
    return data


def _resources(template: dict[str, Any], path: Path) -> dict[str, Any]:
    resources = template.get("Resources")
    if not isinstance(resources, dict):
        raise PlldbError(f"{path} has no Resources section.", "Point --template at your SAM template.")
    return resources


def _merge_globals(template: dict[str, Any], path: Path) -> dict[str, Any]:
    """Resources with Globals merged exactly as SAM does (aws-sam-translator's Globals)."""
    from samtranslator.model.exceptions import ExceptionWithMessage
    from samtranslator.plugins.globals.globals import Globals

    template = copy.deepcopy(template)
    resources = _resources(template, path)
    try:
        globals_section = Globals(template)
        for logical_id, resource in resources.items():
            if not isinstance(resource, dict) or not str(resource.get("Type", "")).startswith(
                "AWS::Serverless::"
            ):
                continue
            properties = resource.get("Properties")
            if properties is None:
                properties = {}
            if not isinstance(properties, dict):
                continue
            resource["Properties"] = globals_section.merge(
                str(resource["Type"]), properties, logical_id, resource.get("IgnoreGlobals")
            )
    except ExceptionWithMessage as exc:
        raise PlldbError(f"{path}: {exc.message.rstrip('.')}.", TEMPLATE_FIX)
    return resources


# --- Resolving -------------------------------------------------------------------------------------
def _scan(path: Path, prefix: str, project_dir: Path, result: TemplateFunctions, seen: list[Path]) -> None:
    resolved = path.resolve()
    if resolved in seen:
        chain = " -> ".join(str(p) for p in [*seen, resolved])
        raise PlldbError(f"Nested applications include each other: {chain}.")
    if len(seen) >= MAX_NESTING:
        raise PlldbError(f"Nested applications are more than {MAX_NESTING} levels deep at {path}.")
    resources = _merge_globals(read_template(path), path)
    base_dir = path.parent
    for logical_id, resource in resources.items():
        if not isinstance(resource, dict):
            continue
        kind = resource.get("Type")
        properties = resource.get("Properties") or {}
        if not isinstance(properties, dict):
            properties = {}
        name = prefix + str(logical_id)
        if kind in (SERVERLESS_FUNCTION, LAMBDA_FUNCTION):
            outcome = _resolve_function(
                logical_id=name,
                kind=kind,
                properties=properties,
                resources=resources,
                base_dir=base_dir,
                project_dir=project_dir,
            )
            if isinstance(outcome, LocalFunction):
                result.local[name] = outcome
            else:
                result.unavailable[name] = outcome
        elif kind in (SERVERLESS_APPLICATION, CLOUDFORMATION_STACK):
            location = _nested_location(resource, base_dir)
            if isinstance(location, Path):
                _scan(location, name + "/", project_dir, result, [*seen, resolved])
            else:
                result.unavailable[name] = location


def _nested_location(resource: Any, base_dir: Path) -> Path | str:
    """The local template of a nested application or stack, or why there is none."""
    if not isinstance(resource, dict):
        return "not a resource"
    properties = resource.get("Properties") or {}
    key = "Location" if resource.get("Type") == SERVERLESS_APPLICATION else "TemplateURL"
    if resource.get("Type") not in (SERVERLESS_APPLICATION, CLOUDFORMATION_STACK) or not isinstance(
        properties, dict
    ):
        return "not a nested application"
    location = properties.get(key)
    if isinstance(location, dict) and "ApplicationId" in location:
        return "nested application from the Serverless Application Repository: no local template"
    if not isinstance(location, str):
        return f"nested application whose {key} is not a local path: no local template"
    if location.startswith(REMOTE_PREFIXES):
        return f"nested application at {location}: no local template"
    nested = (base_dir / location).resolve()
    if not nested.is_file():
        return f"nested application template {location} does not exist ({nested})"
    return nested


def _local_folder(value: Any, base_dir: Path, what: str) -> Path | str:
    """A local folder given as a relative or absolute path, or why the value is not one."""
    if value is None:
        return f"has no {what}"
    if not isinstance(value, str):
        return f"{what} is in S3 or computed, not a local folder"
    if value.startswith(REMOTE_PREFIXES):
        return f"{what} {value} is not a local folder"
    folder = (base_dir / value).resolve()
    if not folder.exists():
        return f"{what} {value} does not exist ({folder})"
    if not folder.is_dir():
        return f"{what} {value} is a file, not a source folder ({folder})"
    return folder


def _resolve_function(
    *,
    logical_id: str,
    kind: str,
    properties: dict[str, Any],
    resources: dict[str, Any],
    base_dir: Path,
    project_dir: Path,
) -> LocalFunction | str:
    if properties.get("PackageType") == "Image":
        return "is packaged as a container image (PackageType: Image)"
    if kind == SERVERLESS_FUNCTION:
        if "InlineCode" in properties:
            return "uses InlineCode: there is no local folder to run"
        code = _local_folder(properties.get("CodeUri"), base_dir, "CodeUri")
    else:
        source = properties.get("Code")
        if isinstance(source, dict) and "ZipFile" in source:
            return "uses inline code (Code.ZipFile): there is no local folder to run"
        if isinstance(source, dict) and "ImageUri" in source:
            return "is packaged as a container image (Code.ImageUri)"
        code = _local_folder(source, base_dir, "Code")
    if isinstance(code, str):
        return code
    runtime = properties.get("Runtime")
    if isinstance(runtime, str) and not runtime.startswith("python"):
        return f"runtime {runtime} is not Python"
    handler = properties.get("Handler")
    if handler is None:
        return "has no Handler"
    if not isinstance(handler, str):
        return "Handler is computed by an intrinsic function, not a plain string"
    return LocalFunction(
        logical_id=logical_id,
        code_dir=code,
        handler=handler,
        runtime=runtime if isinstance(runtime, str) else None,
        environment=_environment(properties.get("Environment")),
        layer_dirs=_layer_dirs(properties.get("Layers"), resources, base_dir),
        timeout=_integer(properties.get("Timeout")),
        memory_size=_integer(properties.get("MemorySize")),
        template_dir=project_dir,
    )


def _environment(environment: Any) -> dict[str, str]:
    """Literal variables as Lambda stores them (text); values computed by intrinsics are left out."""
    variables = environment.get("Variables") if isinstance(environment, dict) else None
    if not isinstance(variables, dict):
        return {}
    result = {}
    for name, value in variables.items():
        if isinstance(value, bool):
            result[str(name)] = "true" if value else "false"
        elif isinstance(value, (str, int, float)):
            result[str(name)] = str(value)
    return result


def _integer(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return None


def _layer_dirs(layers: Any, resources: dict[str, Any], base_dir: Path) -> list[Path]:
    """Folders of the layers defined in this template (``!Ref MyLayer``); ARNs of others are skipped."""
    if not isinstance(layers, list):
        return []
    folders = []
    for layer in layers:
        if not (isinstance(layer, dict) and set(layer) == {"Ref"} and isinstance(layer["Ref"], str)):
            continue
        resource = resources.get(layer["Ref"])
        if not isinstance(resource, dict):
            continue
        properties = resource.get("Properties") or {}
        if resource.get("Type") == SERVERLESS_LAYER:
            content = properties.get("ContentUri")
        elif resource.get("Type") == LAMBDA_LAYER:
            content = properties.get("Content")
        else:
            continue
        folder = _local_folder(content, base_dir, "ContentUri")
        if isinstance(folder, Path):
            folders.append(folder)
    return folders


# --- sys.path helpers ------------------------------------------------------------------------------
def python_version_tag() -> str:
    return f"python{sys.version_info.major}.{sys.version_info.minor}"


def layer_python_paths(layer_dir: Path) -> list[Path]:
    """What a layer puts on sys.path: its python/ folder as Lambda unpacks it under /opt.

    A layer whose folder has no python/ subfolder is built by SAM (BuildMethod), which copies the
    folder into python/ at build time: the folder itself is what ends up on sys.path.
    """
    python_dir = layer_dir / "python"
    if not python_dir.is_dir():
        return [layer_dir]
    site_packages = python_dir / "lib" / python_version_tag() / "site-packages"
    return [site_packages, python_dir] if site_packages.is_dir() else [python_dir]


def _virtualenv_site_packages(venv: Path) -> tuple[Path | None, str | None]:
    for candidate in (venv / "lib" / python_version_tag() / "site-packages", venv / "Lib" / "site-packages"):
        if candidate.is_dir():
            return candidate, None
    others = sorted(p.name for p in (venv / "lib").glob("python3.*")) if (venv / "lib").is_dir() else []
    if others:
        return None, (
            f"The virtualenv {venv} is for {', '.join(others)}, not {python_version_tag()} which runs the "
            "functions here: its packages are not used."
        )
    return None, None


def project_site_packages(
    project_dir: Path | None, environ: dict[str, str] | None = None
) -> tuple[list[Path], list[str]]:
    """The project's own packages: the active VIRTUAL_ENV and a .venv next to the template.

    Returns the site-packages folders to put after the function's code and layers, and warnings
    (a virtualenv for another Python version). The interpreter's own environment is not repeated.
    """
    environ = dict(os.environ) if environ is None else environ
    own = {Path(sys.prefix).resolve()}
    candidates = []
    if environ.get("VIRTUAL_ENV"):
        candidates.append(Path(environ["VIRTUAL_ENV"]))
    if project_dir is not None:
        candidates.append(project_dir / ".venv")
    paths: list[Path] = []
    warnings: list[str] = []
    for venv in candidates:
        if not venv.is_dir() or venv.resolve() in own:
            continue
        own.add(venv.resolve())
        site_packages, warning = _virtualenv_site_packages(venv)
        if site_packages is not None and site_packages not in paths:
            paths.append(site_packages)
        if warning:
            warnings.append(warning)
    return paths, warnings
