"""Lambda's data plane for the local cloud: real execution environments for the functions moto stores.

* :mod:`.specs`: what shapes an environment (a function version's configuration, code and layers), the
  Invoke API's refusals, and the unpacked archives.
* :mod:`.environment`: one execution environment, a runtime process with its own Runtime API.
* :mod:`.manager`: the pools of warm environments and the Invoke API's semantics.

:mod:`plldb.localcloud.moto_extensions.awslambda_invoke` routes moto's Invoke to the manager.
"""
