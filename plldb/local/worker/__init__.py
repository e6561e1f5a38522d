"""Running invocations locally: one worker process per execution environment, as in Lambda.

What the handler runs with is the function's, not plldb's: its Python and packages, its environment
variables, its code. docs/local-side.md tells the whole story; each module does one part of it
(what the pool runs and returns is ``plldb.local.invocation``'s ``Invocation`` and ``Outcome``):

- ``variables``: the handler's environment variables, from an allowlist (``worker_environment``);
- ``python_environments``: the project's virtualenvs (``--python``, the active one, ``.venv``, uv,
  Poetry) and what an interpreter is;
- ``runtime_plan``: the Python each function runs on and where its packages come from
  (``plan_runtimes``, which the commands call once at start to say which function runs on what);
- ``support_folders``: what plldb adds to a worker's path (the runtime's AWS SDK, the debugger);
- ``hints``: where to install a module the handler cannot import;
- ``output``: a worker's output, cut into lines as it comes;
- ``process``: one worker process (``WorkerProcess``) and Lambda's error when it ends unasked;
- ``pool``: warm workers per function, replaced when their source or configuration changes
  (``WorkerPool``).

The names below are what code outside this package uses; import anything else from its module.
"""

from plldb.local.worker.output import OutputCallback
from plldb.local.worker.pool import WorkerPool
from plldb.local.worker.runtime_plan import plan_runtimes
from plldb.local.worker.variables import lambda_runtime_variable, never_from_invocation

__all__ = [
    "OutputCallback",
    "WorkerPool",
    "lambda_runtime_variable",
    "never_from_invocation",
    "plan_runtimes",
]
