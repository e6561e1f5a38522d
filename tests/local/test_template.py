"""SAM template -> local functions: Globals merged as SAM merges them, intrinsics, nested apps, reasons."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from plldb.errors import PlldbError
from plldb.local.template import (
    LocalFunction,
    ProjectTemplate,
    layer_python_paths,
    load_local_functions,
    locate_template,
    nested_application_templates,
    scan_template,
)

APP = Path(__file__).parent / "fixtures" / "sam_app"
TEMPLATE = APP / "template.yaml"


@pytest.fixture(scope="module")
def scanned():
    return scan_template(TEMPLATE)


def test_function_with_globals_merged_exactly(scanned):
    assert scanned.local["CreateOrderFunction"] == LocalFunction(
        logical_id="CreateOrderFunction",
        code_dir=APP / "src" / "create_order",
        handler="app.lambda_handler",
        runtime="python3.12",
        environment={
            "LOG_LEVEL": "INFO",
            "SHARED": "local",
            "POWERTOOLS_SERVICE_NAME": "orders",
            "RETRIES": "3",
            "ENABLED": "true",
            "RATIO": "0.5",
        },
        layer_dirs=[APP / "layers" / "common", APP / "layers" / "extra"],
        timeout=30,
        memory_size=256,
        template_dir=APP,
        environment_names=frozenset(
            {
                "LOG_LEVEL",
                "SHARED",
                "STAGE",
                "POWERTOOLS_SERVICE_NAME",
                "TABLE_NAME",
                "RETRIES",
                "ENABLED",
                "RATIO",
            }
        ),
        code_notice=None,
        remote_layers=(
            "arn:aws:lambda:${AWS::Region}:017000801446:layer:AWSLambdaPowertoolsPythonV3-python312-x86_64:7",
        ),
    )


def test_intrinsics_everywhere_are_parsed_and_left_out(scanned):
    function = scanned.local["GetOrderFunction"]
    assert function.handler == "handlers.get.handler"
    assert function.memory_size is None  # !If
    assert function.timeout == 10  # from Globals
    assert function.environment == {
        "LOG_LEVEL": "INFO",
        "SHARED": "global",
        "POWERTOOLS_SERVICE_NAME": "orders",
    }
    assert function.layer_dirs == [APP / "layers" / "common"]


def test_ignore_globals_star_keeps_only_local_properties(scanned):
    function = scanned.local["IsolatedFunction"]
    assert (function.runtime, function.timeout, function.memory_size) == ("python3.13", None, None)
    assert function.environment == {}
    assert function.layer_dirs == []


def test_plain_cloudformation_function_with_local_code_and_layer(scanned):
    function = scanned.local["PlainFunction"]
    assert function.code_dir == APP / "src" / "plain"
    assert (function.handler, function.runtime) == ("main.handler", "python3.11")
    assert function.environment == {"MODE": "plain"}
    assert function.layer_dirs == [APP / "layers" / "raw"]


def test_nested_applications_are_followed_with_their_own_globals(scanned):
    report = scanned.local["Reports/DailyReportFunction"]
    assert report.code_dir == APP / "apps" / "reports" / "src" / "report"
    assert (report.handler, report.runtime, report.timeout) == ("report.handler", "python3.12", 60)
    assert report.environment == {"REPORTS": "yes", "FORMAT": "csv"}
    assert report.template_dir == APP
    archive = scanned.local["Reports/Archive/ArchiveFunction"]
    assert archive.code_dir == APP / "apps" / "reports" / "apps" / "archive" / "src"
    legacy = scanned.local["Legacy/LegacyFunction"]
    assert (legacy.code_dir, legacy.memory_size, legacy.environment) == (
        APP / "legacy" / "src",
        1024,
        {"LEGACY": "1"},
    )


def test_functions_without_local_source_are_reported_with_reasons(scanned):
    assert scanned.unavailable == {
        "NodeFunction": "runtime nodejs20.x is not Python",
        "InlineFunction": "uses InlineCode: there is no local folder to run",
        "ArtifactFunction": "CodeUri s3://deploy-artifacts/orders/3f2a.zip is not a local folder",
        "BucketKeyFunction": "CodeUri is in S3 or computed, not a local folder",
        "ImageFunction": "is packaged as a container image (PackageType: Image)",
        "RemovedFunction": f"CodeUri src/removed does not exist ({APP / 'src' / 'removed'})",
        "ZipFunction": "uses inline code (Code.ZipFile): there is no local folder to run",
        "Marketplace": "nested application from the Serverless Application Repository: no local template",
        "Remote": "nested application at https://s3.amazonaws.com/templates/remote.yaml: no local template",
    }
    assert sorted(scanned.local) == [
        "CreateOrderFunction",
        "GetOrderFunction",
        "IsolatedFunction",
        "Legacy/LegacyFunction",
        "PlainFunction",
        "Reports/Archive/ArchiveFunction",
        "Reports/DailyReportFunction",
    ]
    assert load_local_functions(TEMPLATE) == scanned.local


def test_nested_application_templates_lists_direct_local_children():
    assert nested_application_templates(TEMPLATE) == {
        "Reports": APP / "apps" / "reports" / "template.yaml",
        "Legacy": APP / "legacy" / "stack.json",
    }


def test_code_uri_that_is_a_file_is_reported(tmp_path):
    (tmp_path / "code.zip").write_bytes(b"PK")
    template = tmp_path / "template.yaml"
    template.write_text(
        "Resources:\n  Zipped:\n    Type: AWS::Serverless::Function\n"
        "    Properties: {CodeUri: code.zip, Handler: app.handler, Runtime: python3.12}\n"
    )
    assert scan_template(template).unavailable == {
        "Zipped": f"CodeUri code.zip is a file, not a source folder ({tmp_path / 'code.zip'})"
    }


def test_missing_template_is_a_clear_error(tmp_path):
    with pytest.raises(PlldbError) as error:
        scan_template(tmp_path / "nope.yaml")
    assert error.value.message == f"Template {tmp_path / 'nope.yaml'} was not found."


def test_yaml_error_names_file_and_line(tmp_path):
    template = tmp_path / "template.yaml"
    template.write_text("Resources:\n  Fn:\n    Type: AWS::Serverless::Function\n   Properties: {}\n")
    with pytest.raises(PlldbError) as error:
        scan_template(template)
    assert error.value.message.startswith(f"{template}, line 4: invalid YAML: ")


def test_json_error_names_file_and_line(tmp_path):
    template = tmp_path / "template.json"
    template.write_text('{\n  "Resources": {\n    "Fn": {"Type": "AWS::Serverless::Function",}\n  }\n}\n')
    with pytest.raises(PlldbError) as error:
        scan_template(template)
    assert error.value.message == (
        f"{template}, line 3: invalid JSON: Expecting property name enclosed in double quotes (column 48)."
    )


def test_invalid_globals_section_is_reported(tmp_path):
    template = tmp_path / "template.yaml"
    template.write_text("Globals:\n  Function:\n    Role: x\nResources: {}\n")
    with pytest.raises(PlldbError) as error:
        scan_template(template)
    assert error.value.message.startswith(
        f"{template}: 'Globals' section is invalid. 'Role' is not a supported property of 'Function'."
    )


def test_nested_applications_including_each_other_are_refused(tmp_path):
    (tmp_path / "a.yaml").write_text(
        "Resources:\n  B:\n    Type: AWS::Serverless::Application\n    Properties: {Location: b.yaml}\n"
    )
    (tmp_path / "b.yaml").write_text(
        "Resources:\n  A:\n    Type: AWS::CloudFormation::Stack\n    Properties: {TemplateURL: a.yaml}\n"
    )
    with pytest.raises(PlldbError) as error:
        scan_template(tmp_path / "a.yaml")
    assert error.value.message == (
        f"Nested applications include each other: {tmp_path / 'a.yaml'} -> {tmp_path / 'b.yaml'} -> {tmp_path / 'a.yaml'}."
    )


def test_layer_python_paths(tmp_path):
    plain = tmp_path / "plain"
    (plain / "python").mkdir(parents=True)
    built = tmp_path / "built"
    built.mkdir()
    packaged = tmp_path / "packaged"
    site_packages = (
        packaged / "python" / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages"
    )
    site_packages.mkdir(parents=True)
    assert layer_python_paths(plain) == [plain / "python"]
    assert layer_python_paths(built) == [built]
    assert layer_python_paths(packaged) == [site_packages, packaged / "python"]
    other = packaged / "python" / "lib" / "python3.13" / "site-packages"
    other.mkdir(parents=True)
    assert layer_python_paths(packaged, "python3.13") == [other, packaged / "python"]


NAMES = st.from_regex(r"[A-Z][A-Z0-9_]{0,6}", fullmatch=True)
LITERALS = st.one_of(
    st.text(alphabet="abcxyz019 -", max_size=8),
    st.integers(min_value=0, max_value=10_000),
    st.booleans(),
)
VALUES = st.one_of(LITERALS, st.builds(lambda name: {"Ref": name}, NAMES))


@settings(max_examples=40, deadline=None)
@given(
    global_variables=st.dictionaries(NAMES, VALUES, max_size=5),
    local_variables=st.dictionaries(NAMES, VALUES, max_size=5),
    global_layers=st.lists(st.sampled_from(["LayerA", "LayerB"]), max_size=2),
    local_layers=st.lists(st.sampled_from(["LayerA", "LayerB"]), max_size=2),
    global_timeout=st.one_of(st.none(), st.integers(1, 900)),
    local_timeout=st.one_of(st.none(), st.integers(1, 900)),
)
def test_globals_merge_matches_sam_rules(
    tmp_path_factory,
    global_variables,
    local_variables,
    global_layers,
    local_layers,
    global_timeout,
    local_timeout,
):
    """Variables merge key by key (local wins), Layers concatenate (global first), scalars override."""
    root = tmp_path_factory.mktemp("merge")
    for name in ("src", "layer_a", "layer_b"):
        (root / name).mkdir()
    function_globals: dict = {"Runtime": "python3.12", "Environment": {"Variables": global_variables}}
    properties: dict = {
        "CodeUri": "src",
        "Handler": "app.handler",
        "Environment": {"Variables": local_variables},
    }
    if global_layers:
        function_globals["Layers"] = [{"Ref": name} for name in global_layers]
    if local_layers:
        properties["Layers"] = [{"Ref": name} for name in local_layers]
    if global_timeout is not None:
        function_globals["Timeout"] = global_timeout
    if local_timeout is not None:
        properties["Timeout"] = local_timeout
    document = {
        "Transform": "AWS::Serverless-2016-10-31",
        "Globals": {"Function": function_globals},
        "Resources": {
            "Fn": {"Type": "AWS::Serverless::Function", "Properties": properties},
            "LayerA": {"Type": "AWS::Serverless::LayerVersion", "Properties": {"ContentUri": "layer_a"}},
            "LayerB": {"Type": "AWS::Serverless::LayerVersion", "Properties": {"ContentUri": "layer_b"}},
        },
    }
    (root / "template.yaml").write_text(yaml.safe_dump(document))
    function = load_local_functions(root / "template.yaml")["Fn"]

    def text(value):
        return ("true" if value else "false") if isinstance(value, bool) else str(value)

    merged = {**global_variables, **local_variables}
    assert function.environment == {
        name: text(value) for name, value in merged.items() if not isinstance(value, dict)
    }
    folders = {"LayerA": root / "layer_a", "LayerB": root / "layer_b"}
    assert function.layer_dirs == [folders[name] for name in [*global_layers, *local_layers]]
    assert function.timeout == (local_timeout if local_timeout is not None else global_timeout)


# --- Code resolution as SAM CLI does it --------------------------------------------------------------
def write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


NO_CODE_URI = """
Transform: AWS::Serverless-2016-10-31
Globals:
  Function:
    Runtime: python3.12
Resources:
  RootFunction:
    Type: AWS::Serverless::Function
    Properties:
      Handler: root_handler.handler
      Environment:
        Variables:
          QUEUE_URL: !Ref Queue
          MODE: plain
  PlainRootFunction:
    Type: AWS::Lambda::Function
    Properties:
      Handler: root_handler.handler
      Runtime: python3.13
      Role: arn:aws:iam::123456789012:role/r
  Queue:
    Type: AWS::SQS::Queue
"""


def test_a_function_without_code_uri_runs_from_the_template_folder(tmp_path):
    write(tmp_path, {"template.yaml": NO_CODE_URI, "root_handler.py": "def handler(e, c):\n    return 1\n"})
    scanned = scan_template(tmp_path / "template.yaml")
    assert scanned.unavailable == {}
    root = scanned.local["RootFunction"]
    assert (root.code_dir, root.handler, root.runtime) == (tmp_path, "root_handler.handler", "python3.12")
    assert root.environment == {"MODE": "plain"}
    assert root.environment_names == frozenset({"QUEUE_URL", "MODE"})
    plain = scanned.local["PlainRootFunction"]
    assert (plain.code_dir, plain.runtime, plain.code_notice) == (tmp_path, "python3.13", None)


BUILT = """
Transform: AWS::Serverless-2016-10-31
Resources:
  RootFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: RootFunction
      Handler: root_handler.handler
      Runtime: python3.12
  OrdersFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: OrdersFunction
      Handler: app.handler
      Runtime: python3.13
"""

SOURCE = """
Transform: AWS::Serverless-2016-10-31
Resources:
  RootFunction:
    Type: AWS::Serverless::Function
    Properties:
      Handler: root_handler.handler
      Runtime: python3.12
  OrdersFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: orders/
      Handler: app.handler
      Runtime: python3.13
"""


def sam_built_project(root: Path, source_name: str | None = "template.yaml") -> Path:
    build = root / ".aws-sam" / "build"
    files = {
        ".aws-sam/build/template.yaml": BUILT,
        ".aws-sam/build/RootFunction/root_handler.py": "def handler(e, c):\n    return 'built'\n",
        ".aws-sam/build/OrdersFunction/app.py": "def handler(e, c):\n    return 'built'\n",
        "root_handler.py": "def handler(e, c):\n    return 'source'\n",
        "orders/app.py": "def handler(e, c):\n    return 'source'\n",
    }
    if source_name is not None:
        files[source_name] = SOURCE
    write(root, files)
    return build / "template.yaml"


def test_sam_build_output_maps_back_to_the_source_template(tmp_path):
    built = sam_built_project(tmp_path)
    scanned = scan_template(built)
    assert scanned.template == tmp_path / "template.yaml"
    assert scanned.notices == []
    assert scanned.local["OrdersFunction"].code_dir == tmp_path / "orders"
    assert scanned.local["RootFunction"].code_dir == tmp_path
    assert scanned.local["OrdersFunction"].template_dir == tmp_path
    assert {f.code_notice for f in scanned.local.values()} == {None}


def test_sam_build_output_maps_back_to_samconfigs_template(tmp_path):
    built = sam_built_project(tmp_path, source_name="infra/service.yaml")
    write(tmp_path, {"samconfig.toml": '[default.build.parameters]\ntemplate_file = "infra/service.yaml"\n'})
    write(tmp_path / "infra", {"orders/app.py": "", "root_handler.py": ""})
    scanned = scan_template(built)
    assert scanned.template == tmp_path / "infra" / "service.yaml"
    assert scanned.local["OrdersFunction"].code_dir == tmp_path / "infra" / "orders"
    assert scanned.local["OrdersFunction"].template_dir == tmp_path


def test_sam_build_output_without_a_source_template_runs_the_build_copies_and_says_so(tmp_path):
    built = sam_built_project(tmp_path, source_name=None)
    scanned = scan_template(built)
    build = tmp_path / ".aws-sam" / "build"
    assert scanned.template == built
    assert scanned.notices == [
        f"{built} is the output of 'sam build' and {tmp_path} has no source template (template.yaml, "
        "template.yml, template.json or samconfig's template_file): its functions run from the build copies "
        f"in {build}, so edits to your source take effect after 'sam build'. Pass --template with your "
        "source template to run your source."
    ]
    orders = scanned.local["OrdersFunction"]
    assert orders.code_dir == build / "OrdersFunction"
    assert orders.code_notice == (
        f"runs the build copy in {build / 'OrdersFunction'}: edits to your source take effect after 'sam build'"
    )


# --- Finding the template ----------------------------------------------------------------------------
def test_locate_template_in_sam_clis_order(tmp_path):
    write(tmp_path, {"template.json": "{}", "template.yml": "", "cdk.out/manifest.json": "{}"})
    assert locate_template(directory=tmp_path) == ProjectTemplate(tmp_path / "template.yml", tmp_path)
    (tmp_path / "template.yaml").write_text("")
    assert locate_template(directory=tmp_path).template == tmp_path / "template.yaml"
    configured = tmp_path / "infra" / "stack.yaml"
    write(tmp_path, {"infra/stack.yaml": ""})
    assert locate_template(directory=tmp_path, samconfig_template=configured) == ProjectTemplate(
        configured, configured.parent
    )
    assert locate_template(directory=tmp_path, template=Path("template.json")).template == (
        tmp_path / "template.json"
    )
    built = tmp_path / ".aws-sam" / "build" / "template.yaml"
    write(tmp_path, {".aws-sam/build/template.yaml": ""})
    assert locate_template(directory=tmp_path, template=built) == ProjectTemplate(built, tmp_path)


def test_locate_template_mistakes_are_one_line_with_the_fix(tmp_path):
    def message(**options) -> str:
        with pytest.raises(PlldbError) as error:
            locate_template(directory=tmp_path, **options)
        return error.value.one_line()

    assert message() == (
        f"No SAM template or CDK output in {tmp_path} (template.yaml, template.yml, template.json or cdk.out). "
        "Pass --template with your SAM template, or --cdk-out with the folder 'cdk synth --no-staging' writes."
    )
    assert message(template=Path("nope.yaml")) == (
        "Template nope.yaml was not found. Pass --template with the path of your SAM template."
    )
    assert message(samconfig_template=tmp_path / "gone.yaml") == (
        f"The template_file of samconfig, {tmp_path / 'gone.yaml'}, was not found. "
        "Correct template_file in samconfig or pass --template."
    )
    assert message(template=Path("t.yaml"), cdk_out=Path("cdk.out")) == (
        "--template and --cdk-out cannot be used together. Pass only one of them."
    )
    assert message(cdk_out=Path("cdk.out")) == (
        f"{tmp_path / 'cdk.out'} is not a CDK cloud assembly: it has no manifest.json. "
        "Run 'cdk synth --no-staging' in your CDK app, or pass --cdk-out with the folder it writes."
    )
