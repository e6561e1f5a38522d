"""AWS CDK apps: functions mapped to their source through the cloud assembly's asset metadata.

The fixture is the exact output of ``cdk synth --no-staging`` for tests/local/fixtures/cdk_app
(manifest.json with a nested assembly for a stage, the stacks' templates with ``aws:cdk:path``,
``aws:asset:path``, ``aws:asset:property`` and ``AWS::CDK::Metadata``, a nested stack's template),
copied and relocated as if synthesized where the copy is.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from plldb.errors import PlldbError
from plldb.local.stack import map_stack
from plldb.local.template import (
    CdkStack,
    LocalFunction,
    ProjectTemplate,
    cdk_stacks,
    locate_template,
    nested_application_templates,
    scan_template,
)
from tests.local.fixtures.apps import lambda_python, relocate_cdk_app

ORDERS = "OrdersFunction6A2CE8B1"
THUMBNAIL = "ThumbnailFunction3F9B0C7D"
AUDIT_STACK = "AuditNestedStackAuditNestedStackResource8C1F2E5A"
AUDIT = f"{AUDIT_STACK}/AuditFunction4E7A1C93"
BUNDLED = "asset.5b0b2ac2c8bb6b3c1e7e3ac5f2d4cbd6b1aa5ae8f2d1c5e3f9a4b7d0e1c2f3a4"
NESTED_TEMPLATE = "OrdersStackAudit5C2A8E1F.nested.template.json"


@pytest.fixture
def app(tmp_path) -> Path:
    return relocate_cdk_app(tmp_path / "orders-cdk")


def test_the_assembly_lists_its_stacks_including_a_stages(app):
    assert cdk_stacks(app / "cdk.out") == [
        CdkStack("OrdersStack", "OrdersStack", "OrdersStack", app / "cdk.out" / "OrdersStack.template.json"),
        CdkStack(
            "ProdReports8F7E1D2C",
            "Prod-Reports",
            "Prod/Reports",
            app / "cdk.out" / "assembly-Prod" / "ProdReports8F7E1D2C.template.json",
        ),
    ]


def test_the_stack_is_chosen_by_its_deployed_name_or_its_name_in_the_app(app):
    for name in ("Prod-Reports", "Prod/Reports", "ProdReports8F7E1D2C"):
        project = locate_template(directory=app, stack_name=name)
        assert project == ProjectTemplate(
            template=app / "cdk.out" / "assembly-Prod" / "ProdReports8F7E1D2C.template.json",
            project_dir=app,
            cdk_out=app / "cdk.out",
            stack=cdk_stacks(app / "cdk.out")[1],
        )
    elsewhere = app.parent / "elsewhere"
    elsewhere.mkdir()
    project = locate_template(directory=elsewhere, cdk_out=app / "cdk.out", stack_name="OrdersStack")
    assert (project.template, project.project_dir) == (app / "cdk.out" / "OrdersStack.template.json", app)


def test_stack_mistakes_are_one_line_with_the_fix(app):
    with pytest.raises(PlldbError) as error:
        locate_template(directory=app)
    assert error.value.one_line() == (
        f"{app / 'cdk.out'} has 2 stacks: OrdersStack, Prod-Reports (Prod/Reports). "
        "Pass --stack-name with the one to use."
    )
    with pytest.raises(PlldbError) as error:
        locate_template(directory=app, stack_name="orders")
    assert error.value.one_line() == (
        f"Stack 'orders' is not in {app / 'cdk.out'} (its stacks: OrdersStack, Prod-Reports (Prod/Reports)). "
        "Check --stack-name, or synthesize the app again with 'cdk synth --no-staging'."
    )
    (app / "cdk.out" / "manifest.json").write_text("{not json")
    with pytest.raises(PlldbError) as error:
        locate_template(directory=app, stack_name="OrdersStack")
    assert error.value.one_line().startswith(f"Cannot read {app / 'cdk.out' / 'manifest.json'}: Expecting ")
    assert error.value.fix == (
        "Run 'cdk synth --no-staging' in your CDK app, or pass --cdk-out with the folder it writes."
    )


def test_functions_map_to_their_source_folders_through_the_asset_metadata(app):
    scanned = locate_template(directory=app, stack_name="OrdersStack").scan()
    assert sorted(scanned.local) == [AUDIT, ORDERS, THUMBNAIL]
    assert scanned.unavailable == {}
    assert scanned.local[ORDERS] == LocalFunction(
        logical_id=ORDERS,
        code_dir=app / "lambda" / "orders",
        handler="index.handler",
        runtime="python3.12",
        environment={"STAGE": "dev"},
        layer_dirs=[app / "layers" / "shared"],
        timeout=None,
        memory_size=None,
        template_dir=app,
        environment_names=frozenset({"TABLE_NAME", "STAGE"}),
        code_notice=None,
        remote_layers=(),
    )
    audit = scanned.local[AUDIT]
    assert (audit.code_dir, audit.handler, audit.runtime, audit.template_dir) == (
        app / "lambda" / "audit",
        "audit.handler",
        "python3.13",
        app,
    )
    thumbnail = scanned.local[THUMBNAIL]
    assert thumbnail.code_dir == app / "cdk.out" / BUNDLED
    assert thumbnail.code_notice == (
        f"runs the copy the CDK bundled into {app / 'cdk.out' / BUNDLED} (aws:asset:is-bundled): edits to "
        "your source take effect after 'cdk synth'"
    )
    assert nested_application_templates(app / "cdk.out" / "OrdersStack.template.json") == {
        AUDIT_STACK: app / "cdk.out" / NESTED_TEMPLATE
    }


def test_functions_have_the_ids_sam_cli_gives_cdk_resources(app):
    scanned = scan_template(app / "cdk.out" / "OrdersStack.template.json")
    assert scanned.aliases == {
        "OrdersFunction": ORDERS,
        "ThumbnailFunction": THUMBNAIL,
        "Audit": AUDIT_STACK,
        "Audit/AuditFunction": AUDIT,
    }
    assert scanned.resolve("Audit/AuditFunction") == AUDIT
    assert scanned.resolve(ORDERS) == ORDERS
    assert scanned.resolve("Nope") is None
    assert scanned.names() == [
        f"Audit/AuditFunction ({AUDIT})",
        f"OrdersFunction ({ORDERS})",
        f"ThumbnailFunction ({THUMBNAIL})",
    ]


def test_a_default_synth_stages_copies_which_run_and_say_so(app):
    """`cdk synth` without --no-staging copies each asset into cdk.out/asset.<hash> and names it relatively."""
    template_path = app / "cdk.out" / "OrdersStack.template.json"
    template = json.loads(template_path.read_text())
    metadata = template["Resources"][ORDERS]["Metadata"]
    staged = "asset.8f3c1d2e4a5b6c7d8e9f0a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6e7f8a9b0c1d"
    shutil.copytree(app / "lambda" / "orders", app / "cdk.out" / staged)
    metadata["aws:asset:path"] = staged
    template_path.write_text(json.dumps(template, indent=1))
    orders = scan_template(template_path).local[ORDERS]
    assert orders.code_dir == app / "cdk.out" / staged
    assert orders.code_notice == (
        f"runs the copy the CDK staged in {app / 'cdk.out' / staged}: edits to your source take effect "
        "after 'cdk synth'; synthesize with 'cdk synth --no-staging' to run your source"
    )


def test_an_asset_folder_that_is_gone_is_the_reason_there_is_no_local_code(app):
    shutil.rmtree(app / "lambda" / "audit")
    scanned = scan_template(app / "cdk.out" / "OrdersStack.template.json")
    assert scanned.unavailable == {
        AUDIT: f"aws:asset:path {app / 'lambda' / 'audit'} does not exist ({app / 'lambda' / 'audit'})"
    }


def developer_environment() -> dict[str, str]:
    """This process's environment, as a developer's shell without an activated virtualenv."""
    return {name: value for name, value in os.environ.items() if name != "VIRTUAL_ENV"}


def plldb_invoke(*arguments: str, cwd: Path, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "plldb", "invoke", *arguments],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=cwd,
        env=developer_environment(),
        timeout=120,
    )


def test_plldb_invoke_runs_a_cdk_function_by_its_construct_id(app):
    event = app / "event.json"
    event.write_text('{"id": "o-5"}')
    completed = plldb_invoke("OrdersFunction", "--stack-name", "OrdersStack", "--event", str(event), cwd=app)
    assert completed.returncode == 0, completed.stderr
    assert json.loads(completed.stdout) == {
        "order": "o-5",
        "stage": "dev",
        "table": None,  # its value is computed by CloudFormation: only a deployed invocation has it
        "shared": "shared layer",
        "python": "3.12" if lambda_python("3.12") else f"{sys.version_info[0]}.{sys.version_info[1]}",
        "function": "OrdersFunction",
    }


def test_plldb_invoke_runs_a_function_of_a_nested_stack_on_its_python(app):
    if lambda_python("3.13") is None:
        pytest.skip("python3.13 is not installed on this machine")
    completed = plldb_invoke(
        "Audit/AuditFunction",
        "--cdk-out",
        "cdk.out",
        "-s",
        "OrdersStack",
        "-e",
        "-",
        cwd=app,
        stdin='{"id": 7}',
    )
    assert completed.returncode == 0, completed.stderr
    assert json.loads(completed.stdout) == {
        "audited": 7,
        "python": "3.13",
        "file": str(app / "lambda" / "audit" / "audit.py"),
    }
    assert completed.stderr == ""


def test_plldb_invoke_says_when_a_cdk_function_runs_a_bundled_copy(app):
    completed = plldb_invoke("ThumbnailFunction", "-s", "OrdersStack", cwd=app)
    assert completed.returncode == 0, completed.stderr
    assert json.loads(completed.stdout) == {"thumbnail": "bundled copy"}
    assert completed.stderr.splitlines()[0] == (
        f"Warning: {THUMBNAIL} runs the copy the CDK bundled into {app / 'cdk.out' / BUNDLED} "
        "(aws:asset:is-bundled): edits to your source take effect after 'cdk synth'."
    )


def test_plldb_invoke_lists_cdk_functions_by_their_ids(app):
    completed = plldb_invoke("Nope", "-s", "Prod-Reports", cwd=app)
    assert (completed.returncode, completed.stdout) == (1, "")
    assert completed.stderr == (
        f"Error: No function 'Nope' in {app / 'cdk.out' / 'assembly-Prod' / 'ProdReports8F7E1D2C.template.json'}. "
        "Available: ReportsFunction (ReportsFunction9C0D1E2F).\n"
    )


# --- plldb attach: the deployed stack's functions map to the app's source ------------------------------
REGION = "us-east-1"


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    from plldb.localcloud import moto_extensions

    moto_extensions.install()  # nested stacks
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def deploy_as_cdk_does(app: Path, endpoint: str) -> boto3.Session:
    """What `cdk deploy` does with the assembly: publish the assets, then create the stack from its template."""
    session = boto3.Session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION)
    s3 = session.client("s3", endpoint_url=endpoint)
    bucket = f"cdk-hnb659fds-assets-123456789012-{REGION}"
    s3.create_bucket(Bucket=bucket)
    assets = json.loads((app / "cdk.out" / "OrdersStack.assets.json").read_text())["files"]
    for asset in assets.values():
        source = Path(asset["source"]["path"])
        source = source if source.is_absolute() else app / "cdk.out" / source
        if asset["source"]["packaging"] == "zip":
            buffer = io.BytesIO()
            with zipfile.ZipFile(buffer, "w") as archive:
                for file in sorted(p for p in source.rglob("*") if p.is_file()):
                    archive.write(file, file.relative_to(source).as_posix())
            body = buffer.getvalue()
        else:
            body = source.read_bytes()
        s3.put_object(
            Bucket=bucket, Key=asset["destinations"]["current_account-current_region"]["objectKey"], Body=body
        )
    session.client("ssm", endpoint_url=endpoint).put_parameter(
        Name="/cdk-bootstrap/hnb659fds/version", Value="21", Type="String"
    )
    cloudformation = session.client("cloudformation", endpoint_url=endpoint)
    cloudformation.create_stack(
        StackName="OrdersStack",
        TemplateBody=(app / "cdk.out" / "OrdersStack.template.json").read_text(),
        Capabilities=["CAPABILITY_IAM"],
    )
    status = cloudformation.describe_stacks(StackName="OrdersStack")["Stacks"][0]["StackStatus"]
    assert status == "CREATE_COMPLETE"
    return session


def test_a_deployed_cdk_stack_maps_to_the_apps_source(app, moto_endpoint, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    session = deploy_as_cdk_does(app, moto_endpoint)
    project = locate_template(directory=app, stack_name="OrdersStack")
    scanned = project.scan()

    stack_map = map_stack(session, "OrdersStack", project.template)

    by_path = {function.logical_path: function for function in stack_map.functions}
    assert sorted(by_path) == [AUDIT, ORDERS, THUMBNAIL]
    orders = by_path[ORDERS]
    assert (orders.local, orders.source, orders.notice, orders.missing_reason) == (
        scanned.local[ORDERS],
        "lambda/orders/index.py:handler",
        None,
        None,
    )
    audit = by_path[AUDIT]
    assert (audit.logical_id, audit.local, audit.source) == (
        "AuditFunction4E7A1C93",
        scanned.local[AUDIT],
        "lambda/audit/audit.py:handler",
    )
    assert audit.stack_id.startswith("arn:aws:cloudformation:us-east-1:123456789012:stack/OrdersStack-Audit")
    assert by_path[THUMBNAIL].notice == scanned.local[THUMBNAIL].code_notice
    assert stack_map.by_physical_name(orders.physical_name) is orders
    assert [f.logical_path for f in stack_map.selected(["Audit*"])] == [AUDIT]
    assert audit.aliases == ("Audit/AuditFunction",)
    assert [f.logical_path for f in stack_map.selected(["OrdersFunction", "Audit/*"])] == [ORDERS, AUDIT]
