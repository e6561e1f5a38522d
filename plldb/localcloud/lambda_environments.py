"""Real Lambda execution environments for the local cloud.

moto stores functions but needs Docker to run them. Here every function runs as Lambda runs it: its
deployment package and layers are unpacked (cached by content hash), a Runtime API server of ours is
started (:mod:`plldb.localcloud.runtime_api`) and the real AWS runtime interface client is launched as
``<python> -m awslambdaric <handler>`` in its own process group, with the environment variables and the
execution role's temporary credentials Lambda gives a function. Environments stay warm between
invocations, concurrent invocations get separate environments, and a configuration or code change
retires the old ones.

Where Lambda has ``/var/task`` and ``/opt``, an environment has a code directory (``LAMBDA_TASK_ROOT``,
also its working directory) and an ``/opt`` equivalent holding its layers. ``PYTHONPATH`` lists the code
directory, then the layers' ``python/lib/pythonX.Y/site-packages`` and ``python`` directories, exactly
as Lambda's runtime does with ``/opt``. An ``AWS_LAMBDA_EXEC_WRAPPER`` is run with the runtime's command
line as its arguments; a wrapper path under ``/opt/`` is translated to the same path inside the
environment's ``/opt`` equivalent, and one under ``/var/task/`` to the code directory (only the path
executed is translated: the variable keeps its value, and paths the wrapper itself uses are not
rewritten, so a layer's scripts should find their files relative to their own location).

:func:`install` routes moto's ``Invoke``/``InvokeAsync`` (and moto's own internal invocations, such as
event source mappings and custom resources) through an :class:`EnvironmentManager`.

The implementation lives in :mod:`plldb.localcloud.lambdas` and
:mod:`plldb.localcloud.moto_extensions.awslambda_invoke`; this module keeps their names importable here.
"""

from __future__ import annotations

from plldb.localcloud.lambdas.environment import ExecutionEnvironment, role_credentials, translate_lambda_path
from plldb.localcloud.lambdas.manager import EnvironmentManager
from plldb.localcloud.lambdas.specs import (
    ASYNC_PAYLOAD_LIMIT,
    IDLE_ENVIRONMENT_SECONDS,
    SYNC_PAYLOAD_LIMIT,
    FunctionSpec,
    InvalidRequestContentException,
    InvalidRuntimeException,
    InvocationResult,
    LayerContent,
    RequestEntityTooLargeException,
    ServiceShutDown,
    TooManyRequestsException,
    ValidationException,
    extract_archive,
    function_spec,
)
from plldb.localcloud.moto_extensions.awslambda_invoke import install, installed_manager, uninstall

__all__ = [
    "ASYNC_PAYLOAD_LIMIT",
    "IDLE_ENVIRONMENT_SECONDS",
    "SYNC_PAYLOAD_LIMIT",
    "EnvironmentManager",
    "ExecutionEnvironment",
    "FunctionSpec",
    "InvalidRequestContentException",
    "InvalidRuntimeException",
    "InvocationResult",
    "LayerContent",
    "RequestEntityTooLargeException",
    "ServiceShutDown",
    "TooManyRequestsException",
    "ValidationException",
    "extract_archive",
    "function_spec",
    "install",
    "installed_manager",
    "role_credentials",
    "translate_lambda_path",
    "uninstall",
]
