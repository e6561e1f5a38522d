"""EventBridge scheduled rules that fire: every enabled rule with a ``ScheduleExpression`` in moto's events
backend invokes its Lambda targets asynchronously, with EventBridge's scheduled-event shape.

Sources (EventBridge user guide): "Rate expressions reference" and "Cron expressions reference" (see
:mod:`plldb.localcloud.schedules`); the scheduled event ("detail-type": "Scheduled Event", "source":
"aws.events", the rule's ARN in "resources", "detail": {}); Lambda targets are invoked asynchronously;
delivery is at least once and may be late, never early.

The local cloud runs :meth:`Scheduler.start`'s timer, which calls :meth:`Scheduler.fire_due` with the
clock's time about once a second: each occurrence fires once its time has come, later when the process
is busy, never before. Tests drive it with an injected time instead: ``fire_due(now)`` fires what is due
at ``now`` (every missed occurrence, each with its own scheduled time, as at-least-once delivery would
late), and ``fire(rule_name)`` fires a rule once at once. A rule's schedule starts when the scheduler
first sees it enabled with that expression (a rate rule's first occurrence is one period later); a
disabled or deleted rule never fires, and enabling it again starts its schedule anew. Targets that are
not Lambda functions are not invoked (logged).
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from plldb.localcloud.schedules import Cron, Schedule, ScheduleExpressionError, parse_schedule

logger = logging.getLogger(__name__)

TICK_SECONDS = 1.0


@dataclass(frozen=True)
class Firing:
    """One scheduled event handed to one target."""

    rule_name: str
    rule_arn: str
    target_id: str
    target_arn: str
    time: datetime  # the occurrence's scheduled time (the event's "time")
    payload: bytes  # what the target received
    error: str | None = None  # why the invocation was not accepted, if it was not


@dataclass
class _Tracked:
    expression: str
    schedule: Schedule
    start: datetime
    next_due: datetime = field(init=False)

    def __post_init__(self) -> None:
        self.next_due = self.schedule.next_after(self.start, self.start)


def _moment(now: datetime | float | None, clock: Callable[[], float]) -> datetime:
    if isinstance(now, datetime):
        return now.astimezone(UTC)
    return datetime.fromtimestamp(clock() if now is None else now, tz=UTC)


def scheduled_event(rule_arn: str, account_id: str, region: str, moment: datetime) -> dict[str, Any]:
    """The event EventBridge sends a scheduled rule's targets."""
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": account_id,
        "time": moment.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": region,
        "resources": [rule_arn],
        "detail": {},
    }


def _input_path(event: dict[str, Any], path: str) -> Any:
    """A target's InputPath (``$`` or ``$.a.b``) applied to the event."""
    value: Any = event
    for part in [part for part in path.removeprefix("$").split(".") if part]:
        value = value.get(part) if isinstance(value, dict) else None
    return value


class Scheduler:
    """Fires the scheduled rules of one account and region; thread-safe."""

    def __init__(
        self,
        invoke: Callable[[str, bytes], Any],
        account_id: str,
        region: str,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._invoke = invoke  # (function ARN, event) -> None, an asynchronous Lambda invocation
        self.account_id = account_id
        self.region = region
        self._clock = clock
        self._lock = threading.RLock()
        self._tracked: dict[str, _Tracked] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.firings: list[Firing] = []

    # --- the timer -------------------------------------------------------------------------------------
    def start(self) -> None:
        """Fire due rules on a timer thread of its own until stop()."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="eventbridge-scheduler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        while not self._stop.wait(TICK_SECONDS - (self._clock() % TICK_SECONDS)):
            try:
                self.fire_due()
            except Exception:
                logger.exception("the scheduler could not fire the due rules")

    # --- firing ----------------------------------------------------------------------------------------
    def fire_due(self, now: datetime | float | None = None) -> list[Firing]:
        """Fire every occurrence of every enabled scheduled rule that is due at now (the clock's time)."""
        moment = _moment(now, self._clock)
        fired: list[Firing] = []
        with self._lock:
            rules = self._scheduled_rules()
            for arn in set(self._tracked) - set(rules):
                del self._tracked[arn]  # deleted or disabled: its schedule starts anew if it comes back
            for arn, rule in rules.items():
                tracked = self._tracked.get(arn)
                if tracked is None or tracked.expression != rule.scheduled_expression:
                    try:
                        schedule = parse_schedule(rule.scheduled_expression)
                    except ScheduleExpressionError:
                        logger.warning("rule %s has an invalid schedule %r", arn, rule.scheduled_expression)
                        continue
                    tracked = self._tracked[arn] = _Tracked(rule.scheduled_expression, schedule, moment)
                while tracked.next_due <= moment:
                    fired += self._fire_rule(rule, tracked.next_due)
                    tracked.next_due = tracked.schedule.next_after(tracked.next_due, tracked.start)
        return fired

    def fire(self, rule_name: str, now: datetime | float | None = None) -> list[Firing]:
        """Fire one rule once, now, whatever its schedule; a disabled or unknown rule fires nothing."""
        moment = _moment(now, self._clock)
        with self._lock:
            rule = next((r for r in self._scheduled_rules().values() if r.name == rule_name), None)
            return [] if rule is None else self._fire_rule(rule, moment)

    def next_due(self, rule_name: str) -> datetime | None:
        """When the rule fires next (None while the scheduler has not seen it enabled)."""
        with self._lock:
            for arn, tracked in self._tracked.items():
                if arn.rsplit("/", 1)[-1] == rule_name:
                    return tracked.next_due
        return None

    # --- internals -------------------------------------------------------------------------------------
    def _scheduled_rules(self) -> dict[str, Any]:
        from moto.events.models import events_backends

        backend = events_backends[self.account_id][self.region]
        bus = backend.event_buses.get("default")
        if bus is None:
            return {}
        return {
            rule.arn: rule
            for rule in list(bus.rules.values())
            if rule.scheduled_expression and rule.state == "ENABLED"
        }

    def _fire_rule(self, rule: Any, moment: datetime) -> list[Firing]:
        event = scheduled_event(rule.arn, self.account_id, self.region, moment)
        fired = []
        for target in list(rule.targets):
            arn = str(target.get("Arn", ""))
            if ":lambda:" not in arn or ":function:" not in arn:
                logger.info("rule %s: target %s is not a Lambda function; not invoked", rule.name, arn)
                continue
            if target.get("InputTransformer"):
                logger.warning(
                    "rule %s: InputTransformer is not supported; target %s not invoked", rule.name, arn
                )
                continue
            if target.get("Input") is not None:
                payload = str(target["Input"]).encode("utf-8")
            elif target.get("InputPath"):
                payload = json.dumps(_input_path(event, str(target["InputPath"]))).encode("utf-8")
            else:
                payload = json.dumps(event).encode("utf-8")
            error = None
            try:
                self._invoke(arn, payload)
            except Exception as exc:  # EventBridge retries and gives up; the rule goes on
                error = f"{type(exc).__name__}: {exc}"
                logger.warning("rule %s could not invoke %s: %s", rule.name, arn, error)
            fired.append(Firing(rule.name, rule.arn, str(target.get("Id", "")), arn, moment, payload, error))
        with self._lock:
            self.firings.extend(fired)
        return fired


__all__ = ["Cron", "Firing", "Scheduler", "scheduled_event"]
