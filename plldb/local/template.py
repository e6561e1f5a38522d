"""From a SAM template or a CDK cloud assembly to the local source of each function.

Each AWS::Serverless::Function (and AWS::Lambda::Function with a local ``Code`` folder) maps to its
code folder, Handler, Runtime, template-declared environment, local layers, timeout and memory, the
way SAM CLI reads a template:

- ``Globals`` are merged by aws-sam-translator's own implementation, so the result is what SAM deploys.
- A function without ``CodeUri`` (``Code``) has its code in the template's folder: SAM CLI's providers
  default the property to ``"."`` (``SamBaseProvider.DEFAULT_CODEURI``) and ``sam package`` uploads
  that folder.
- Nested applications (AWS::Serverless::Application / AWS::CloudFormation::Stack with a local template)
  are followed; their functions are named "App/Function".
- ``sam build``'s output (``.aws-sam/build/template.yaml``) is mapped back to the project's own
  template (the one ``sam build`` read: samconfig's ``template_file``, else template.yaml|yml|json in
  the folder holding ``.aws-sam``), by logical id; without one, the build copies run and the result
  says so.
- Templates synthesized by the AWS CDK are read as ``sam local`` reads them (SAM CLI's
  ``ResourceMetadataNormalizer``): a resource's ``aws:asset:path`` metadata replaces the property that
  ``aws:asset:property`` names (``Code``, ``Content``, ``TemplateURL``), so functions, layers and nested
  stacks point at their local folders; ``aws:cdk:path`` gives each resource the short id SAM CLI
  accepts ("OrdersFunction", "Audit/AuditFunction"). ``cdk synth --no-staging`` writes the source
  folders themselves; a default ``cdk synth`` stages copies (``cdk.out/asset.<hash>``), and bundling
  writes built copies: those run, and the result says so.

A function that cannot run locally (code in S3, inline code, a container image, not Python) is
reported with the reason instead of failing.
"""

from __future__ import annotations

import copy
import json
import sys
from collections.abc import Mapping
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
DEFAULT_CODE_URI = "."  # SAM CLI's default for CodeUri / Code

# Where SAM CLI looks for a template in the project folder, in this order.
DEFAULT_TEMPLATE_NAMES = ("template.yaml", "template.yml", "template.json")
SAM_BUILD_PARTS = (".aws-sam", "build")

# The AWS CDK's cloud assembly and the metadata it writes on resources with local assets.
DEFAULT_CDK_OUT = "cdk.out"
CDK_MANIFEST = "manifest.json"
CDK_STACK_ARTIFACT = "aws:cloudformation:stack"
CDK_NESTED_ASSEMBLY_ARTIFACT = "cdk:cloud-assembly"
CDK_PATH_KEY = "aws:cdk:path"
ASSET_PATH_KEY = "aws:asset:path"
ASSET_PROPERTY_KEY = "aws:asset:property"
ASSET_BUNDLED_KEY = "aws:asset:is-bundled"
IMAGE_ASSET_PROPERTY = "Code.ImageUri"
SAM_RESOURCE_ID_KEY = "SamResourceId"
CDK_NESTED_STACK_SUFFIX = ".NestedStack"
CDK_SYNTH_FIX = "Run 'cdk synth --no-staging' in your CDK app, or pass --cdk-out with the folder it writes."
MAX_CDK_ASSEMBLY_DEPTH = 10


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
    template_dir: Path | None = None  # the project folder: where its .venv is, and what paths are shown from
    # Every variable the template declares, including those whose value is computed by an intrinsic.
    environment_names: frozenset[str] = frozenset()
    # Set when the code folder is a copy made by a build (sam build, CDK staging or bundling), not the source.
    code_notice: str | None = None
    remote_layers: tuple[str, ...] = ()  # layers that are not local (ARNs): nothing of theirs is on sys.path


@dataclass(frozen=True)
class TemplateFunctions:
    """Every function of a template: those that can run locally and, for the others, why not."""

    local: dict[str, LocalFunction] = field(default_factory=dict)
    unavailable: dict[str, str] = field(
        default_factory=dict
    )  # logical id -> reason ("runtime nodejs20.x is not Python")
    # Other names of functions, as SAM CLI accepts them for CDK templates: "Audit/AuditFunction" -> logical path.
    aliases: dict[str, str] = field(default_factory=dict)
    notices: list[str] = field(default_factory=list)  # about the template as a whole, for the user
    template: Path | None = None  # the template that was read (the source one when a build was mapped back)

    def resolve(self, name: str) -> str | None:
        """The logical path of a function given by its logical path or one of its aliases."""
        if name in self.local or name in self.unavailable:
            return name
        return self.aliases.get(name)

    def names(self) -> list[str]:
        """How to name each function that can run locally: "alias (logical path)" where they differ."""
        shown = {path: path for path in self.local}
        for alias, path in self.aliases.items():
            if path in shown and shown[path] == path:
                shown[path] = f"{alias} ({path})"
        return sorted(shown.values())


@dataclass(frozen=True)
class CdkStack:
    """One stack of a CDK cloud assembly."""

    artifact_id: str  # "OrdersStack"; in a stage "ProdOrdersStack1A2B3C4D"
    stack_name: str  # the deployed CloudFormation stack name
    display_name: str  # "OrdersStack", "Prod/OrdersStack"
    template: Path


@dataclass(frozen=True)
class ProjectTemplate:
    """The template plldb reads for a project, and the project folder around it."""

    template: Path
    project_dir: Path
    cdk_out: Path | None = None
    stack: CdkStack | None = None

    def scan(self) -> TemplateFunctions:
        return scan_template(self.template, self.project_dir)


def load_local_functions(template_path: Path) -> dict[str, LocalFunction]:
    """The functions with local source, keyed by logical id (nested: "App/Func")."""
    return scan_template(template_path).local


def scan_template(template_path: Path, project_dir: Path | None = None) -> TemplateFunctions:
    """All functions of the template and its local nested applications.

    ``project_dir`` is where the project's environment is looked for and what paths are shown
    relative to; by default the template's folder (for sam build output the folder holding
    ``.aws-sam``, for a CDK cloud assembly the CDK app's folder).
    """
    template_path = Path(template_path).absolute()
    notices: list[str] = []
    build_copy: Path | None = None
    build_project = sam_build_project(template_path)
    if build_project is not None:
        source = source_template(build_project)
        if source is not None:
            template_path = source
        else:
            build_copy = template_path.parent
            notices.append(
                f"{template_path} is the output of 'sam build' and {build_project} has no source template "
                f"({', '.join(DEFAULT_TEMPLATE_NAMES)} or samconfig's template_file): its functions run from "
                f"the build copies in {build_copy}, so edits to your source take effect after 'sam build'. "
                "Pass --template with your source template to run your source."
            )
    if project_dir is None:
        project_dir = build_project or cdk_project_dir(template_path.parent) or template_path.parent
    result = TemplateFunctions(notices=notices, template=template_path)
    _scan(
        template_path,
        prefix="",
        alias_prefix="",
        project_dir=Path(project_dir).absolute(),
        result=result,
        seen=[],
        build_copy=build_copy,
    )
    return result


def nested_application_templates(template_path: Path) -> dict[str, Path]:
    """Logical id of each nested application or stack with a local template -> that template."""
    template_path = Path(template_path).absolute()
    template = read_template(template_path)
    _normalize_asset_metadata(template)
    resources = _resources(template, template_path)
    nested = {}
    for logical_id, resource in resources.items():
        location = _nested_location(resource, template_path.parent)
        if isinstance(location, Path):
            nested[logical_id] = location
    return nested


# --- Finding the template --------------------------------------------------------------------------
def locate_template(
    *,
    template: Path | None = None,
    cdk_out: Path | None = None,
    stack_name: str | None = None,
    directory: Path | None = None,
    samconfig_template: Path | None = None,
) -> ProjectTemplate:
    """The template for a command, found as SAM CLI finds it, or in a CDK app's cloud assembly.

    In order: ``--template``; ``--cdk-out`` (the stack named ``stack_name``, or its only stack);
    samconfig's template; template.yaml, template.yml, template.json in ``directory``; then
    ``directory/cdk.out`` when it holds a cloud assembly. Raises PlldbError naming the fix.
    """
    directory = (directory or Path.cwd()).absolute()
    if template is not None and cdk_out is not None:
        raise PlldbError("--template and --cdk-out cannot be used together.", "Pass only one of them.")
    if template is not None:
        path = template if template.is_absolute() else directory / template
        if not path.is_file():
            raise PlldbError(
                f"Template {template} was not found.", "Pass --template with the path of your SAM template."
            )
        return _project_template(path)
    if cdk_out is not None:
        return _cdk_project(cdk_out if cdk_out.is_absolute() else directory / cdk_out, stack_name)
    if samconfig_template is not None:
        if not samconfig_template.is_file():
            raise PlldbError(
                f"The template_file of samconfig, {samconfig_template}, was not found.",
                "Correct template_file in samconfig or pass --template.",
            )
        return _project_template(samconfig_template.absolute())
    for name in DEFAULT_TEMPLATE_NAMES:
        if (directory / name).is_file():
            return _project_template(directory / name)
    if (directory / DEFAULT_CDK_OUT / CDK_MANIFEST).is_file():
        return _cdk_project(directory / DEFAULT_CDK_OUT, stack_name)
    raise PlldbError(
        f"No SAM template or CDK output in {directory} ({', '.join(DEFAULT_TEMPLATE_NAMES)} or {DEFAULT_CDK_OUT}).",
        "Pass --template with your SAM template, or --cdk-out with the folder 'cdk synth --no-staging' writes.",
    )


def _project_template(path: Path) -> ProjectTemplate:
    path = path.absolute()
    project = sam_build_project(path) or cdk_project_dir(path.parent) or path.parent
    return ProjectTemplate(template=path, project_dir=project)


def _cdk_project(cdk_out: Path, stack_name: str | None) -> ProjectTemplate:
    cdk_out = cdk_out.absolute()
    stack = cdk_stack(cdk_out, stack_name)
    project = cdk_project_dir(stack.template.parent) or cdk_out.parent
    return ProjectTemplate(template=stack.template, project_dir=project, cdk_out=cdk_out, stack=stack)


def sam_build_project(template_path: Path) -> Path | None:
    """The project folder when ``template_path`` lies in its ``.aws-sam/build`` (sam build's output)."""
    parts = Path(template_path).absolute().parts
    for index in range(len(parts) - len(SAM_BUILD_PARTS), 0, -1):
        if parts[index : index + len(SAM_BUILD_PARTS)] == SAM_BUILD_PARTS:
            return Path(*parts[:index])
    return None


def source_template(project_dir: Path) -> Path | None:
    """The template ``sam build`` read in ``project_dir``: samconfig's template_file, else the default names."""
    from plldb.local.samconfig import load_samconfig

    try:
        configured = load_samconfig(project_dir).template
    except PlldbError:
        configured = None
    if configured is not None and configured.is_file() and sam_build_project(configured) is None:
        return configured.absolute()
    for name in DEFAULT_TEMPLATE_NAMES:
        if (project_dir / name).is_file():
            return (project_dir / name).absolute()
    return None


# --- The AWS CDK's cloud assembly ------------------------------------------------------------------
def cdk_stacks(cdk_out: Path) -> list[CdkStack]:
    """Every stack of a cloud assembly (manifest.json), including those of nested assemblies (stages)."""
    stacks: list[CdkStack] = []
    _read_assembly(Path(cdk_out).absolute(), stacks, 0)
    return stacks


def _read_assembly(directory: Path, stacks: list[CdkStack], depth: int) -> None:
    manifest = directory / CDK_MANIFEST
    if not manifest.is_file():
        raise PlldbError(f"{directory} is not a CDK cloud assembly: it has no {CDK_MANIFEST}.", CDK_SYNTH_FIX)
    try:
        document = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise PlldbError(f"Cannot read {manifest}: {exc}.", CDK_SYNTH_FIX)
    artifacts = document.get("artifacts") if isinstance(document, dict) else None
    if not isinstance(artifacts, dict):
        return
    for artifact_id, artifact in artifacts.items():
        if not isinstance(artifact, dict):
            continue
        properties = artifact.get("properties")
        properties = properties if isinstance(properties, dict) else {}
        if artifact.get("type") == CDK_STACK_ARTIFACT and isinstance(properties.get("templateFile"), str):
            stack_name = properties.get("stackName")
            display_name = artifact.get("displayName")
            stacks.append(
                CdkStack(
                    artifact_id=str(artifact_id),
                    stack_name=stack_name if isinstance(stack_name, str) and stack_name else str(artifact_id),
                    display_name=display_name if isinstance(display_name, str) else str(artifact_id),
                    template=directory / properties["templateFile"],
                )
            )
        elif artifact.get("type") == CDK_NESTED_ASSEMBLY_ARTIFACT and isinstance(
            properties.get("directoryName"), str
        ):
            if depth >= MAX_CDK_ASSEMBLY_DEPTH:
                raise PlldbError(
                    f"{manifest} nests assemblies more than {MAX_CDK_ASSEMBLY_DEPTH} levels deep."
                )
            _read_assembly(directory / properties["directoryName"], stacks, depth + 1)


def cdk_stack(cdk_out: Path, stack_name: str | None = None) -> CdkStack:
    """The stack of the assembly deployed as ``stack_name`` (or named so in the app); the only one if None."""
    stacks = cdk_stacks(cdk_out)
    names = ", ".join(
        stack.stack_name
        if stack.display_name in (stack.stack_name, stack.artifact_id)
        else f"{stack.stack_name} ({stack.display_name})"
        for stack in stacks
    )
    if not stacks:
        raise PlldbError(f"{cdk_out} has no stacks.", CDK_SYNTH_FIX)
    if stack_name is None:
        if len(stacks) == 1:
            return stacks[0]
        raise PlldbError(
            f"{cdk_out} has {len(stacks)} stacks: {names}.", "Pass --stack-name with the one to use."
        )
    for stack in stacks:
        if stack_name in (stack.stack_name, stack.artifact_id, stack.display_name):
            return stack
    raise PlldbError(
        f"Stack {stack_name!r} is not in {cdk_out} (its stacks: {names}).",
        "Check --stack-name, or synthesize the app again with 'cdk synth --no-staging'.",
    )


def cdk_project_dir(folder: Path) -> Path | None:
    """The CDK app's folder (where cdk.json is) for a folder of its cloud assembly; None if it is not one."""
    folder = Path(folder).absolute()
    if not (folder / CDK_MANIFEST).is_file():
        return None
    top = folder
    while (top.parent / CDK_MANIFEST).is_file() and top.parent != top:
        top = top.parent  # a stage's nested assembly lies inside the top-level one
    return top.parent


def _normalize_asset_metadata(template: dict[str, Any]) -> set[str]:
    """Point CDK asset properties at their local folders, as SAM CLI's metadata normalizer does.

    Returns the logical ids whose property was replaced. The template is changed in place.
    """
    resources = template.get("Resources")
    normalized: set[str] = set()
    if not isinstance(resources, dict):
        return normalized
    for logical_id, resource in resources.items():
        if not isinstance(resource, dict):
            continue
        metadata = resource.get("Metadata")
        if not isinstance(metadata, dict):
            continue
        asset_property = metadata.get(ASSET_PROPERTY_KEY)
        asset_path = metadata.get(ASSET_PATH_KEY)
        if not (
            isinstance(asset_property, str) and asset_property and isinstance(asset_path, str) and asset_path
        ):
            continue
        properties = resource.setdefault("Properties", {})
        if not isinstance(properties, dict):
            continue
        if asset_property == IMAGE_ASSET_PROPERTY:
            properties["Code"] = {"ImageUri": asset_path}
        else:
            keys = asset_property.split(".")
            target = properties
            for key in keys[:-1]:
                target[key] = {}
                target = target[key]
            target[keys[-1]] = asset_path
        normalized.add(str(logical_id))
    return normalized


def _resource_id(resource: Any, logical_id: str) -> str:
    """The id SAM CLI gives a resource: SamResourceId metadata, else its CDK construct id, else the logical id."""
    metadata = resource.get("Metadata") if isinstance(resource, dict) else None
    if not isinstance(metadata, dict):
        return logical_id
    custom = metadata.get(SAM_RESOURCE_ID_KEY)
    if isinstance(custom, str) and custom:
        return custom
    cdk_path = metadata.get(CDK_PATH_KEY)
    if not isinstance(cdk_path, str) or len(cdk_path.split("/")) < 2:
        return logical_id
    parts = cdk_path.split("/")
    nested_stack = resource.get("Type") == CLOUDFORMATION_STACK and parts[-2].endswith(
        CDK_NESTED_STACK_SUFFIX
    )
    resource_id = parts[-2] if parts[-1] == "Resource" or nested_stack else parts[-1]
    if nested_stack:
        resource_id = resource_id[: -len(CDK_NESTED_STACK_SUFFIX)]
    return resource_id


def _asset_notice(resource: Any, folder: Path) -> str | None:
    """When a CDK asset folder is a copy (staged or bundled), what that means for the developer."""
    metadata = resource.get("Metadata") if isinstance(resource, dict) else None
    if not isinstance(metadata, dict) or not isinstance(metadata.get(ASSET_PATH_KEY), str):
        return None
    if metadata.get(ASSET_BUNDLED_KEY) is True:
        return (
            f"runs the copy the CDK bundled into {folder} (aws:asset:is-bundled): edits to your source "
            "take effect after 'cdk synth'"
        )
    if not Path(metadata[ASSET_PATH_KEY]).is_absolute():
        return (
            f"runs the copy the CDK staged in {folder}: edits to your source take effect after 'cdk synth'; "
            "synthesize with 'cdk synth --no-staging' to run your source"
        )
    return None


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
# One pass over a template's resources: functions, nested applications and stacks, each a branch.
def _scan(  # noqa: PLR0912
    path: Path,
    *,
    prefix: str,
    alias_prefix: str,
    project_dir: Path,
    result: TemplateFunctions,
    seen: list[Path],
    build_copy: Path | None,
) -> None:
    resolved = path.resolve()
    if resolved in seen:
        chain = " -> ".join(str(p) for p in [*seen, resolved])
        raise PlldbError(f"Nested applications include each other: {chain}.")
    if len(seen) >= MAX_NESTING:
        raise PlldbError(f"Nested applications are more than {MAX_NESTING} levels deep at {path}.")
    template = read_template(path)
    from_assets = _normalize_asset_metadata(template)
    resources = _merge_globals(template, path)
    base_dir = path.parent
    for logical_id, resource in resources.items():
        if not isinstance(resource, dict):
            continue
        kind = resource.get("Type")
        properties = resource.get("Properties") or {}
        if not isinstance(properties, dict):
            properties = {}
        name = prefix + str(logical_id)
        alias = alias_prefix + _resource_id(resource, str(logical_id))
        if alias != name and kind in (
            SERVERLESS_FUNCTION,
            LAMBDA_FUNCTION,
            SERVERLESS_APPLICATION,
            CLOUDFORMATION_STACK,
        ):
            result.aliases.setdefault(alias, name)
        if kind in (SERVERLESS_FUNCTION, LAMBDA_FUNCTION):
            outcome = _resolve_function(
                logical_id=name,
                kind=kind,
                resource=resource,
                properties=properties,
                resources=resources,
                base_dir=base_dir,
                project_dir=project_dir,
                from_asset=str(logical_id) in from_assets,
            )
            if isinstance(outcome, LocalFunction) and build_copy is not None:
                notice = (
                    f"runs the build copy in {outcome.code_dir}: edits to your source take effect "
                    "after 'sam build'"
                )
                outcome = _with_notice(outcome, notice)
            if isinstance(outcome, LocalFunction):
                result.local[name] = outcome
            else:
                result.unavailable[name] = outcome
        elif kind in (SERVERLESS_APPLICATION, CLOUDFORMATION_STACK):
            location = _nested_location(resource, base_dir)
            if isinstance(location, Path):
                _scan(
                    location,
                    prefix=name + "/",
                    alias_prefix=alias + "/",
                    project_dir=project_dir,
                    result=result,
                    seen=[*seen, resolved],
                    build_copy=build_copy,
                )
            else:
                result.unavailable[name] = location


def _with_notice(function: LocalFunction, notice: str) -> LocalFunction:
    from dataclasses import replace

    return replace(function, code_notice=notice)


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
    resource: dict[str, Any],
    properties: dict[str, Any],
    resources: dict[str, Any],
    base_dir: Path,
    project_dir: Path,
    from_asset: bool,
) -> LocalFunction | str:
    if properties.get("PackageType") == "Image":
        return "is packaged as a container image (PackageType: Image)"
    what = ASSET_PATH_KEY if from_asset else ("CodeUri" if kind == SERVERLESS_FUNCTION else "Code")
    if kind == SERVERLESS_FUNCTION:
        if "InlineCode" in properties:
            return "uses InlineCode: there is no local folder to run"
        if "ImageUri" in properties:
            return "is packaged as a container image (ImageUri)"
        code = _local_folder(properties.get("CodeUri", DEFAULT_CODE_URI), base_dir, what)
    else:
        source = properties.get("Code", DEFAULT_CODE_URI)
        if isinstance(source, dict) and "ZipFile" in source:
            return "uses inline code (Code.ZipFile): there is no local folder to run"
        if isinstance(source, dict) and "ImageUri" in source:
            return "is packaged as a container image (Code.ImageUri)"
        code = _local_folder(source, base_dir, what)
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
    layer_dirs, remote_layers = _layers(properties.get("Layers"), resources, base_dir)
    return LocalFunction(
        logical_id=logical_id,
        code_dir=code,
        handler=handler,
        runtime=runtime if isinstance(runtime, str) else None,
        environment=_environment(properties.get("Environment")),
        layer_dirs=layer_dirs,
        timeout=_integer(properties.get("Timeout")),
        memory_size=_integer(properties.get("MemorySize")),
        template_dir=project_dir,
        environment_names=_environment_names(properties.get("Environment")),
        code_notice=_asset_notice(resource, code) if from_asset else None,
        remote_layers=tuple(remote_layers),
    )


def _variables(environment: Any) -> dict[Any, Any]:
    variables = environment.get("Variables") if isinstance(environment, dict) else None
    return variables if isinstance(variables, dict) else {}


def _environment(environment: Any) -> dict[str, str]:
    """Literal variables as Lambda stores them (text); values computed by intrinsics are left out."""
    result = {}
    for name, value in _variables(environment).items():
        if isinstance(value, bool):
            result[str(name)] = "true" if value else "false"
        elif isinstance(value, (str, int, float)):
            result[str(name)] = str(value)
    return result


def _environment_names(environment: Any) -> frozenset[str]:
    return frozenset(str(name) for name in _variables(environment))


def _integer(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return None


def _layers(layers: Any, resources: dict[str, Any], base_dir: Path) -> tuple[list[Path], list[str]]:
    """Folders of the layers defined in this template (``!Ref MyLayer``), and how the others are named."""
    if not isinstance(layers, list):
        return [], []
    folders: list[Path] = []
    remote: list[str] = []
    for layer in layers:
        if not (isinstance(layer, dict) and set(layer) == {"Ref"} and isinstance(layer["Ref"], str)):
            remote.append(_layer_name(layer))
            continue
        resource = resources.get(layer["Ref"])
        properties = resource.get("Properties") if isinstance(resource, dict) else None
        properties = properties if isinstance(properties, dict) else {}
        if not isinstance(resource, dict) or resource.get("Type") not in (SERVERLESS_LAYER, LAMBDA_LAYER):
            remote.append(_layer_name(layer))
            continue
        content = properties.get("ContentUri" if resource.get("Type") == SERVERLESS_LAYER else "Content")
        folder = _local_folder(content, base_dir, "ContentUri")
        if isinstance(folder, Path):
            folders.append(folder)
        else:
            remote.append(layer["Ref"])
    return folders, remote


def _layer_name(layer: Any) -> str:
    """A layer as the developer wrote it: its ARN, or the intrinsic that computes it."""
    if isinstance(layer, str):
        return layer
    if isinstance(layer, Mapping) and len(layer) == 1:
        (function, argument), *_ = layer.items()
        if function == "Fn::Sub":
            argument = argument[0] if isinstance(argument, list) and argument else argument
            if isinstance(argument, str):
                return argument
        if function == "Ref" and isinstance(argument, str):
            return f"!Ref {argument}"
        return f"a layer computed by {function}"
    return "a computed layer"


# --- sys.path helpers ------------------------------------------------------------------------------
def python_version_tag() -> str:
    return f"python{sys.version_info.major}.{sys.version_info.minor}"


def layer_python_paths(layer_dir: Path, version_tag: str | None = None) -> list[Path]:
    """What a layer puts on sys.path: its python/ folder as Lambda unpacks it under /opt.

    ``version_tag`` ("python3.12", default this interpreter's) names the
    ``python/lib/pythonX.Y/site-packages`` folder Lambda also puts on the path. A layer whose folder
    has no python/ subfolder is built by SAM (BuildMethod), which copies the folder into python/ at
    build time: the folder itself is what ends up on sys.path.
    """
    python_dir = layer_dir / "python"
    if not python_dir.is_dir():
        return [layer_dir]
    site_packages = python_dir / "lib" / (version_tag or python_version_tag()) / "site-packages"
    return [site_packages, python_dir] if site_packages.is_dir() else [python_dir]
