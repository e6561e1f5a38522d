"""EventBridge: PutRule refuses a schedule expression exactly as EventBridge does.

Gap: moto's check is a pair of regular expressions that accept, for example, ``rate(1 minutes)`` and
``rate(0 minutes)``, which EventBridge refuses ("If the value is equal to 1, then the unit must be
singular. If the value is greater than 1, the unit must be plural."); the local cloud's scheduler
(:mod:`plldb.localcloud.scheduler`) would then have a rule it cannot run.
"""

from __future__ import annotations

from typing import Any

from moto.events import models as events_models
from moto.events.exceptions import ValidationException

from plldb.localcloud.moto_extensions.core import original, patch
from plldb.localcloud.schedules import INVALID, ScheduleExpressionError, parse_schedule


def put_rule(self: Any, name: str, *args: Any, **kwargs: Any) -> Any:
    expression = kwargs.get("scheduled_expression")
    if expression:
        try:
            parse_schedule(expression)
        except ScheduleExpressionError:
            raise ValidationException(INVALID)
    return original(events_models.EventsBackend, "put_rule")(self, name, *args, **kwargs)


def install() -> None:
    patch(events_models.EventsBackend, "put_rule", put_rule)
