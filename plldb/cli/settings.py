"""Where a command's stack, template, region and profile come from, and saying so.

Options win; then the project's SAM configuration file (``samconfig.toml``, or ``--config-file``,
environment ``--config-env``), exactly as `sam deploy` reads it; then boto3's own configuration
(``AWS_REGION``, ``~/.aws/config``). Every command that talks to AWS prints where it works (account and
region) and where each setting came from, so a region taken from the wrong place is seen at once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import click

from plldb.errors import PlldbError
from plldb.local.samconfig import DEFAULT_ENVIRONMENT, SamConfig, load_samconfig, parse_samconfig

F = TypeVar("F", bound=Callable[..., Any])


def samconfig_options(func: F) -> F:
    """--config-file and --config-env, as SAM CLI names them."""
    func = click.option(
        "--config-env",
        default=DEFAULT_ENVIRONMENT,
        show_default=True,
        help="Environment of the SAM configuration file to read.",
    )(func)
    func = click.option(
        "--config-file",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help="SAM configuration file (default: samconfig.toml in this folder).",
    )(func)
    return func


@dataclass(frozen=True)
class Settings:
    """The resolved settings, with where each came from."""

    stack_name: str | None = None
    template: Path | None = None
    profile: str | None = None
    region: str | None = None
    config: SamConfig = field(default_factory=SamConfig)
    sources: dict[str, str] = field(default_factory=dict)


def resolve(
    *,
    stack_name: str | None = None,
    template: Path | None = None,
    profile: str | None = None,
    region: str | None = None,
    config_file: Path | None = None,
    config_env: str = DEFAULT_ENVIRONMENT,
) -> Settings:
    """Options first, then the SAM configuration file; missing values stay None (boto3 decides)."""
    if config_file is not None:
        if not config_file.is_file():
            raise PlldbError(f"Configuration file {config_file} was not found.", "Check --config-file.")
        config = parse_samconfig(config_file, config_env)
    else:
        config = load_samconfig(Path.cwd(), config_env)
    origin = f"{config.path.name} [{config_env}]" if config.path is not None else ""
    if (
        config.path is not None
        and config_env != DEFAULT_ENVIRONMENT
        and not _has_environment(config, config_env)
    ):
        raise PlldbError(f"{config.path} has no environment {config_env!r}.", "Check --config-env.")
    sources: dict[str, str] = {}
    values: dict[str, Any] = {}
    for name, given, from_config in (
        ("stack_name", stack_name, config.stack_name),
        ("template", template, config.template),
        ("profile", profile, config.profile),
        ("region", region, config.region),
    ):
        if given is not None:
            values[name], sources[name] = given, f"--{name.replace('_', '-')}"
        elif from_config is not None:
            values[name], sources[name] = from_config, origin
        else:
            values[name] = None
    return Settings(config=config, sources=sources, **values)


def _has_environment(config: SamConfig, environment: str) -> bool:
    """Whether the configuration file names ``environment`` (read again only for this check)."""
    import tomllib

    import yaml

    assert config.path is not None
    text = config.path.read_text(encoding="utf-8")
    document = tomllib.loads(text) if config.path.suffix == ".toml" else yaml.safe_load(text)
    return isinstance(document, dict) and environment in document


def where(session: Any, settings: Settings) -> str:
    """'account 123456789012, region eu-west-1 (region from samconfig.toml [default])': one line."""
    account = "an unknown account"
    try:
        account = "account " + str(session.client("sts").get_caller_identity()["Account"])
    except Exception:  # the command's own first call reports credential problems properly
        pass
    notes = []
    region_source = settings.sources.get("region") or "your AWS configuration"
    notes.append(f"region from {region_source}")
    if settings.sources.get("profile"):
        notes.append(f"profile {settings.profile} from {settings.sources['profile']}")
    return f"{account}, region {session.region_name} ({'; '.join(notes)})"
