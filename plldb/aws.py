"""boto3 sessions for the CLI, and translation of AWS SDK failures into actionable one-line errors."""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

import boto3
import botocore.exceptions
import botocore.session
from botocore.config import Config

from plldb.errors import PlldbError
from plldb.protocol import STACK_NAME_PATTERN

T = TypeVar("T")

# Every AWS region name: a partition prefix, a direction or two, a number (us-east-1, us-gov-west-1,
# eusc-de-east-1); botocore's partitions.json lists them (tests/test_aws_names.py checks every one).
REGION_PATTERN = re.compile(r"^[a-z]{2,4}(-[a-z]+)+-[0-9]{1,2}\Z")

CLIENT_CONFIG = Config(retries={"max_attempts": 8, "mode": "adaptive"}, connect_timeout=10, read_timeout=70)


def make_session(profile: str | None = None, region: str | None = None) -> boto3.Session:
    """A session honouring --profile/--region, the standard AWS variables and AWS_ENDPOINT_URL (via boto3)."""
    try:
        session = boto3.Session(profile_name=profile, region_name=region)
    except botocore.exceptions.ProfileNotFound as exc:
        # The profile may come from --profile or from AWS_PROFILE: name the one that was looked for.
        missing = exc.kwargs.get("profile") or profile
        source = "--profile" if profile else "AWS_PROFILE"
        raise PlldbError(
            f"AWS profile {missing!r} ({source}) was not found.",
            "Check ~/.aws/config, or run 'aws configure --profile NAME'.",
        )
    if not session.region_name:
        raise PlldbError(
            "No AWS region is configured.", "Pass --region, set AWS_REGION, or run 'aws configure'."
        )
    return session


def available_profiles() -> list[str]:
    """The profiles of the developer's AWS config and credentials files (whatever AWS_PROFILE says:
    botocore's own session lists them without choosing one, where boto3's would fail on a bad one)."""
    return list(botocore.session.Session().available_profiles)


def profile_region(profile: str) -> str | None:
    """The region a profile of the config file names, if any."""
    value = botocore.session.Session(profile=profile).get_scoped_config().get("region")
    return str(value) if value else None


def validate_region(region: str) -> str:
    """A region name as AWS forms them (us-east-1, us-gov-west-1, ap-southeast-3), else one clear error."""
    if not REGION_PATTERN.match(region):
        raise PlldbError(
            f"{region!r} is not an AWS region name.", "Pass --region as the AWS CLI takes it, e.g. us-east-1."
        )
    return region


def validate_stack_name(name: str) -> str:
    if not STACK_NAME_PATTERN.match(name):
        raise PlldbError(
            f"{name!r} is not a valid CloudFormation stack name.",
            "Use letters, digits and hyphens, starting with a letter, at most 128 characters.",
        )
    return name


def translate_aws_errors(func: Callable[..., T]) -> Callable[..., T]:
    """Turn every AWS SDK failure into PlldbError so the CLI prints one line with the fix, never a traceback."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        try:
            return func(*args, **kwargs)
        except botocore.exceptions.NoCredentialsError:
            raise PlldbError(
                "No AWS credentials were found.",
                "Run 'aws configure', 'aws sso login', or pass --profile.",
            )
        except botocore.exceptions.CredentialRetrievalError as exc:
            raise PlldbError(
                f"Your AWS credentials could not be loaded ({exc}).",
                "Check your AWS configuration or --profile.",
            )
        except botocore.exceptions.TokenRetrievalError as exc:
            raise PlldbError(f"Your AWS SSO session has expired ({exc}).", "Run 'aws sso login'.")
        except botocore.exceptions.EndpointConnectionError as exc:
            raise PlldbError(
                f"Could not reach {exc.kwargs.get('endpoint_url', 'the AWS endpoint')}.",
                "Check your network, --region and AWS_ENDPOINT_URL.",
            )
        except botocore.exceptions.ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            message = exc.response.get("Error", {}).get("Message", str(exc))
            if code in {"ExpiredToken", "ExpiredTokenException", "RequestExpired"}:
                raise PlldbError(
                    "Your AWS credentials have expired.", "Refresh them and run the command again."
                )
            if code in {"InvalidClientTokenId", "UnrecognizedClientException", "SignatureDoesNotMatch"}:
                raise PlldbError(
                    "Your AWS credentials are not valid.", "Check them with 'aws sts get-caller-identity'."
                )
            if code in {"AccessDenied", "AccessDeniedException"}:
                raise PlldbError(
                    f"Access denied: {message}", "Use credentials allowed to do this, or --profile."
                )
            raise PlldbError(
                f"AWS refused {exc.operation_name}: {code or 'Error'}: {message}",
                "Check your permissions, --region and the stacks involved in the CloudFormation console.",
            )
        except botocore.exceptions.BotoCoreError as exc:
            raise PlldbError(f"The AWS SDK failed: {exc}", "Check your AWS configuration and network.")

    return wrapper
