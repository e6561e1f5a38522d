"""Lambda's rules for changing a function, followed once for every caller.

One update at a time per function (``ResourceConflictException`` while another runs), an update that
names the ``RevisionId`` it read fails with ``PreconditionFailedException`` when the function changed
since (a deploy), and an update is applied only once ``LastUpdateStatus`` is ``Successful``. Lambda's
control plane allows 15 requests a second per account, reads included, so a configuration just read
is reused and an update's own settled answer ends the wait: one read and one write per function when
nothing else is changing it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from botocore.exceptions import ClientError

from plldb.lambda_common import error_code

UPDATE_WAIT_SECONDS = 120.0
CONFLICT_RETRIES = 10
RETRYABLE_CODES = ("ResourceConflictException", "PreconditionFailedException")


class UpdateFailed(Exception):
    """Lambda reported a failed update, or the function kept changing: the message says which."""


class ChangedMeanwhile(Exception):
    """The function was changed by someone else (a deploy) between plldb's read and its update."""


def get_configuration(lambda_client: Any, function: str, qualifier: str | None = None) -> dict[str, Any]:
    arguments: dict[str, Any] = {"FunctionName": function}
    if qualifier:
        arguments["Qualifier"] = qualifier
    config: dict[str, Any] = lambda_client.get_function_configuration(**arguments)
    config.pop("ResponseMetadata", None)
    return config


def settled(config: Mapping[str, Any]) -> bool:
    """No update is running (a failed one is raised by wait_until_updated, so it is not settled)."""
    return config.get("LastUpdateStatus") in (None, "Successful") and config.get("State") != "Pending"


def wait_until_updated(
    lambda_client: Any, function: str, sleep: Callable[[float], None] = time.sleep
) -> dict[str, Any]:
    deadline = time.monotonic() + UPDATE_WAIT_SECONDS
    delay = 0.1
    while True:
        config = get_configuration(lambda_client, function)
        state = config.get("LastUpdateStatus")
        if state == "Failed":
            raise UpdateFailed(
                "the last update of {} failed: {}".format(
                    function, config.get("LastUpdateStatusReason") or "no reason given"
                )
            )
        if state != "InProgress" and config.get("State") != "Pending":
            return config
        if time.monotonic() > deadline:
            raise UpdateFailed(f"{function} is still updating after {UPDATE_WAIT_SECONDS:g} s")
        sleep(delay)
        delay = min(delay * 2, 2.0)


def update_until_applied(
    lambda_client: Any,
    function: str,
    changes_for: Callable[[Mapping[str, Any]], dict[str, Any]],
    known: Mapping[str, Any] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Apply ``changes_for(current)`` once no other update runs; retry conflicts; return the settled result.

    ``changes_for`` sees the configuration the update is based on and may raise ChangedMeanwhile when a
    retry shows that someone else changed the function: their change is then left alone.
    """
    config = (
        dict(known)
        if known is not None and settled(known)
        else wait_until_updated(lambda_client, function, sleep)
    )
    for attempt in range(CONFLICT_RETRIES):
        changes = changes_for(config)
        revision = config.get("RevisionId")
        if revision:
            changes["RevisionId"] = revision
        try:
            updated: dict[str, Any] = lambda_client.update_function_configuration(
                FunctionName=function, **changes
            )
        except ClientError as exc:
            if error_code(exc) not in RETRYABLE_CODES or attempt == CONFLICT_RETRIES - 1:
                raise
            sleep(min(0.2 * (2**attempt), 3.0))
            config = wait_until_updated(lambda_client, function, sleep)
            continue
        updated.pop("ResponseMetadata", None)
        return updated if settled(updated) else wait_until_updated(lambda_client, function, sleep)
    raise UpdateFailed(f"the configuration of {function} kept changing")


def wait_until_active(
    lambda_client: Any, function: str, qualifier: str, sleep: Callable[[float], None] = time.sleep
) -> None:
    """A just-published version serves traffic once Active (SnapStart takes its snapshot meanwhile)."""
    deadline = time.monotonic() + UPDATE_WAIT_SECONDS
    delay = 0.1
    while True:
        state = get_configuration(lambda_client, function, qualifier).get("State")
        if state in (None, "Active"):
            return
        if state == "Failed":
            raise UpdateFailed(f"version {qualifier} of {function} failed to become active")
        if time.monotonic() > deadline:
            raise UpdateFailed(
                f"version {qualifier} of {function} is still {state} after {UPDATE_WAIT_SECONDS:g} s"
            )
        sleep(delay)
        delay = min(delay * 2, 2.0)
