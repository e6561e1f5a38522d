"""`plldb bootstrap setup | status | destroy` on the local cloud: output, no-op, one-line errors."""

from __future__ import annotations

import sys
import uuid

import click
import pytest

from plldb.bootstrap.helper_stack import TEMPLATE_VERSION, invoke_manager, load_helper_stack
from plldb.cli.bootstrap import bootstrap
from plldb.cli.common import run_cli
from plldb.errors import PlldbError

pytestmark = pytest.mark.slow


@click.group()
def plldb_cli() -> None:
    """The plldb command with the bootstrap group registered, as plldb.cli does."""


plldb_cli.add_command(bootstrap)


# Every bootstrap command first says where it works (the error, if any, is the line after).
WHERE = "Working in account 123456789012, region us-east-1 (region from your AWS configuration)."


def run(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["plldb", *args])
    code = run_cli(plldb_cli)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_setup_status_noop_and_destroy_through_the_command_line(local_cloud, monkeypatch, capsys, tmp_path):
    monkeypatch.chdir(tmp_path)  # no samconfig.toml of this repository's
    name = f"plldb-cli-{uuid.uuid4().hex[:6]}"

    code, out, err = run(monkeypatch, capsys, "bootstrap", "setup", "--helper-stack", name)
    assert code == 0, err
    # Never hard-wrapped in a log (an S3 URI or an ARN stays whole): no line continues another one.
    prefixes = ("Working in ", "Setting up ", "  ", "Helper stack ")
    assert [line for line in err.splitlines() if not line.startswith(prefixes)] == []
    assert f"Helper stack {name} in us-east-1 created." in err
    lines = dict(line.split(": ", 1) for line in out.splitlines())
    assert sorted(lines) == [
        "ConnectRouteArn",
        "DispatcherFunctionArn",
        "InstrumentedFunctionPolicyArn",
        "InvocationsTableName",
        "LayerVersionArn",
        "ManagerFunctionName",
        "PayloadBucketName",
        "TemplateVersion",
        "WebSocketUrl",
    ]
    assert lines["InstrumentedFunctionPolicyArn"] == (
        f"arn:aws:iam::123456789012:policy/plldb/{name}-instrumented-function"
    )
    assert lines["WebSocketUrl"].startswith("wss://") and lines["TemplateVersion"] == TEMPLATE_VERSION

    code, out, err = run(monkeypatch, capsys, "bootstrap", "setup", "--helper-stack", name)
    assert code == 0, err
    assert f"Helper stack {name} in us-east-1 already up to date (nothing changed)." in err

    code, out, err = run(monkeypatch, capsys, "bootstrap", "status", "--helper-stack", name)
    assert code == 0, err
    assert out.splitlines()[:4] == [
        f"Stack:            {name} (us-east-1)",
        "Status:           CREATE_COMPLETE",
        f"Template version: {TEMPLATE_VERSION}",
        "Active sessions:  none",
    ]

    helper = load_helper_stack(local_cloud.session(), name)
    with pytest.raises(PlldbError) as failed:
        invoke_manager(local_cloud.session(), helper, {"action": "explode"})
    assert failed.value.message == "The plldb manager failed: unknown action 'explode'"

    code, out, err = run(monkeypatch, capsys, "bootstrap", "destroy", "--helper-stack", name)
    assert code == 0, err
    assert out.splitlines()[0] == f"Deleted the helper stack {name}."

    code, out, err = run(monkeypatch, capsys, "bootstrap", "status", "--helper-stack", name)
    assert (code, out) == (1, "")
    assert err == (
        f"{WHERE}\nError: The plldb helper stack {name!r} was not found in us-east-1. "
        "Run 'plldb bootstrap setup' first.\n"
    )


def test_an_invalid_stack_name_is_one_line(local_cloud, monkeypatch, capsys):
    code, out, err = run(monkeypatch, capsys, "bootstrap", "status", "--helper-stack", "no_underscores!")
    assert (code, out) == (1, "")
    assert err == (
        "Error: 'no_underscores!' is not a valid CloudFormation stack name. "
        "Use letters, digits and hyphens, starting with a letter, at most 128 characters.\n"
    )


def test_missing_credentials_are_one_error_line_with_the_fix(local_cloud, monkeypatch, capsys, tmp_path):
    monkeypatch.chdir(tmp_path)
    for name in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_AUTHORIZATION_TOKEN",
        "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "missing-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "missing-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")

    code, out, err = run(monkeypatch, capsys, "bootstrap", "setup")

    assert (code, out) == (1, "")
    assert err == (
        "Working in an unknown account, region us-east-1 (region from your AWS configuration).\n"
        "Error: No AWS credentials were found. Run 'aws configure', 'aws sso login', or pass --profile.\n"
    )
