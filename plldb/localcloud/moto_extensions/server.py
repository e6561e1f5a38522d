"""moto's server itself: per-request costs that do not change behaviour."""

from __future__ import annotations

import functools

from plldb.localcloud.moto_extensions.core import patch


def install() -> None:
    """Gap (speed, not behaviour): moto's server lists its package folder (about 150 stat calls) and
    inspects the handler class again for every request. Both answers are fixed once the process has
    started, so they are computed once: about a quarter of moto's own time per request.
    """
    from moto import backends as moto_backends
    from moto.core import responses as core_responses

    modules = frozenset(moto_backends.list_of_moto_modules())
    patch(moto_backends, "list_of_moto_modules", lambda: modules)
    method_names = core_responses.method_names_from_class
    patch(
        core_responses, "method_names_from_class", functools.cache(lambda cls: frozenset(method_names(cls)))
    )
