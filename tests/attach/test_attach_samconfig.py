"""samconfig.toml / samconfig.yaml: the defaults `plldb attach` takes from a SAM project."""

from __future__ import annotations

from pathlib import Path

import pytest

from plldb.errors import PlldbError
from plldb.local.samconfig import SamConfig, load_samconfig, parse_samconfig

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "hello-sam"


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path


def test_no_file_gives_empty_config(tmp_path: Path) -> None:
    assert load_samconfig(tmp_path) == SamConfig()


def test_deploy_section_wins_over_global_and_template_comes_from_build(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "samconfig.toml",
        """
version = 0.1
[default.global.parameters]
stack_name = "from-global"
region = "eu-west-1"
profile = "dev"

[default.build.parameters]
template_file = "src/template.yml"

[default.deploy.parameters]
stack_name = "from-deploy"
template_file = ".aws-sam/build/packaged.yaml"
region = "eu-central-1"

[prod.deploy.parameters]
stack_name = "prod-stack"
""",
    )
    assert load_samconfig(tmp_path) == SamConfig(
        path=path,
        stack_name="from-deploy",
        template=tmp_path / "src" / "template.yml",
        region="eu-central-1",
        profile="dev",
    )
    assert parse_samconfig(path, "prod").stack_name == "prod-stack"
    assert parse_samconfig(path, "prod").region is None


def test_template_key_and_absolute_path(tmp_path: Path) -> None:
    write(tmp_path, "samconfig.toml", '[default.deploy.parameters]\ntemplate = "/abs/template.yaml"\n')
    assert load_samconfig(tmp_path).template == Path("/abs/template.yaml")


def test_yaml_file_is_read_when_there_is_no_toml(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "samconfig.yaml",
        "version: 0.1\ndefault:\n  deploy:\n    parameters:\n      stack_name: yaml-stack\n      profile: ops\n",
    )
    assert load_samconfig(tmp_path) == SamConfig(path=path, stack_name="yaml-stack", profile="ops")


def test_toml_is_preferred_over_yaml(tmp_path: Path) -> None:
    write(tmp_path, "samconfig.yaml", "default:\n  deploy:\n    parameters:\n      stack_name: yaml-stack\n")
    write(tmp_path, "samconfig.toml", '[default.deploy.parameters]\nstack_name = "toml-stack"\n')
    assert load_samconfig(tmp_path).stack_name == "toml-stack"


def test_the_example_project(tmp_path: Path) -> None:
    config = load_samconfig(EXAMPLE)
    assert (config.stack_name, config.region, config.profile, config.template) == (
        "hello-sam",
        "us-east-1",
        None,
        None,
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[default.deploy.parameters\n", " is not valid: "),
        ('default = "x"\n', ": [default] must be a table of commands."),
        ('[default]\ndeploy = "x"\n', ": [default.deploy.parameters] must be a table."),
        ("[default.deploy.parameters]\nstack_name = 3\n", ": stack_name must be a non-empty string, not 3."),
    ],
)
def test_malformed_files_name_the_file_and_problem(tmp_path: Path, text: str, expected: str) -> None:
    write(tmp_path, "samconfig.toml", text)
    with pytest.raises(PlldbError) as caught:
        load_samconfig(tmp_path)
    assert caught.value.message.startswith(str(tmp_path / "samconfig.toml") + expected)
