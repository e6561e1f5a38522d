"""Lambda's Invoke (and moto's own internal invocations) through real execution environments.

moto stores functions but needs Docker to run them. :func:`install` routes moto's ``Invoke`` and
``InvokeAsync`` (and moto's own internal invocations, such as event source mappings and custom resources)
through an :class:`~plldb.localcloud.lambdas.manager.EnvironmentManager`; :func:`uninstall` gives them back.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

from plldb.localcloud.lambdas.manager import EnvironmentManager
from plldb.localcloud.lambdas.specs import InvocationResult, ServiceShutDown
from plldb.localcloud.moto_extensions.awslambda import UPDATE_LISTENERS
from plldb.localcloud.moto_extensions.awslambda_versions import DELETION_LISTENERS
from plldb.localcloud.moto_extensions.core import patch, restore

PATCH_GROUP = "lambda-invoke"
_installed_manager: EnvironmentManager | None = None
_patched = False


def installed_manager() -> EnvironmentManager | None:
    """The manager moto's Lambda invocations currently go to, if any."""
    return _installed_manager


def _manager() -> EnvironmentManager:
    if _installed_manager is None:
        raise ServiceShutDown("no Lambda environment manager is installed")
    return _installed_manager


def _response_headers(result: InvocationResult, log_type: str | None) -> dict[str, str]:
    headers = {"content-type": "application/json", "status": str(result.status_code)}
    if result.status_code == 200:
        headers["X-Amz-Executed-Version"] = result.executed_version
        if result.function_error:
            headers["X-Amz-Function-Error"] = result.function_error
        if log_type == "Tail":
            headers["X-Amz-Log-Result"] = result.log_result
    return headers


def _invoke_action(self: Any) -> tuple[int, dict[str, str], bytes]:
    """moto's Invoke, answered by the environment manager with Lambda's exact headers."""
    function_name = unquote(self.path.rsplit("/", 2)[-2])
    qualifier = self.querystring.get("Qualifier", [None])[0]
    invocation_type = self.headers.get("X-Amz-Invocation-Type") or "RequestResponse"
    result = _manager().invoke_in(
        self.current_account,
        self.region,
        function_name,
        self.raw_body or b"",
        invocation_type=invocation_type,
        client_context=self.headers.get("X-Amz-Client-Context"),
        qualifier=qualifier,
    )
    return result.status_code, _response_headers(result, self.headers.get("X-Amz-Log-Type")), result.payload


def _invoke_async_action(self: Any) -> tuple[int, dict[str, str], bytes]:
    """moto's (deprecated) InvokeAsync: an Event invocation answered with 202 {"Status": 202}."""
    path = self.path.rstrip("/")
    function_name = unquote(path.rsplit("/", 2)[-2])
    _manager().invoke_in(
        self.current_account, self.region, function_name, self.raw_body or b"", invocation_type="Event"
    )
    return 202, {"content-type": "application/json", "status": "202"}, b'{"Status": 202}'


def _invoke_model(self: Any, body: Any, request_headers: Any, response_headers: Any) -> bytes:
    """moto's LambdaFunction.invoke (event sources, custom resources, rotations) through the manager."""
    headers = {str(k).lower(): v for k, v in dict(request_headers or {}).items()}
    payload = body.encode("utf-8") if isinstance(body, str) else bytes(body or b"")
    result = _manager().invoke_function(
        self,
        payload,
        headers.get("x-amz-invocation-type") or "RequestResponse",
        headers.get("x-amz-client-context"),
    )
    if response_headers is not None:
        response_headers.update(_response_headers(result, "Tail"))
        response_headers.pop("status", None)
        response_headers.pop("content-type", None)
    return result.payload


def _retire_environments(account_id: str, region: str, function_name: str, version: str | None) -> None:
    """A deleted function's (or version's) environments are retired."""
    if _installed_manager is not None:
        _installed_manager.discard(account_id, region, function_name, version)


def _retire_replaced_configuration(account_id: str, region: str, function_name: str) -> None:
    """An update of $LATEST retires the environments of the configuration it replaced (idle ones stop
    now, busy ones when their invocation ends), so they do not wait out the idle timeout."""
    if _installed_manager is not None:
        _installed_manager.discard(account_id, region, function_name, "$LATEST")


def install(manager: EnvironmentManager) -> None:
    """Route moto's Lambda invocations through manager (idempotent; a later call swaps the manager)."""
    global _installed_manager, _patched
    from moto.awslambda.models import LambdaFunction
    from moto.awslambda.responses import LambdaResponse

    _installed_manager = manager
    if _patched:
        return
    from plldb.localcloud import moto_extensions

    moto_extensions.install()  # deletions and updates reach their listeners through the extensions
    patch(LambdaResponse, "invoke", _invoke_action, group=PATCH_GROUP)
    patch(LambdaResponse, "invoke_async", _invoke_async_action, group=PATCH_GROUP)
    patch(LambdaFunction, "invoke", _invoke_model, group=PATCH_GROUP)
    DELETION_LISTENERS.append(_retire_environments)
    UPDATE_LISTENERS.append(_retire_replaced_configuration)
    _patched = True


def uninstall() -> None:
    """Give moto its own Lambda invocation back."""
    global _installed_manager, _patched
    _installed_manager = None
    if _patched:
        restore(PATCH_GROUP)
        DELETION_LISTENERS.remove(_retire_environments)
        UPDATE_LISTENERS.remove(_retire_replaced_configuration)
        _patched = False
