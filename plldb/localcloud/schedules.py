"""EventBridge schedule expressions: ``rate(value unit)`` and ``cron(fields)``, and when they fall due.

Follows the EventBridge user guide, "Rate expressions reference" and "Cron expressions reference":

* ``rate(value unit)``: value a positive integer, unit ``minute|minutes|hour|hours|day|days``, singular
  exactly when the value is 1. "A rate expression starts when you create the scheduled event rule, and
  then it runs on a defined schedule": occurrences are the start plus whole multiples of the rate.
* ``cron(Minutes Hours Day-of-month Month Day-of-week Year)`` in UTC, to the minute: ``, - * /`` in every
  field, ``?`` (and ``L``, ``W``) in Day-of-month, ``?``, ``L`` and ``#`` in Day-of-week (1-7 = SUN-SAT),
  month and day names; one of Day-of-month and Day-of-week must be ``?``.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

INVALID = "Parameter ScheduleExpression is not valid."
_RATE = re.compile(r"^rate\((\d+) (minute|minutes|hour|hours|day|days)\)$")
_CRON = re.compile(r"^cron\((.*)\)$")
_UNIT_SECONDS = {"minute": 60, "hour": 3600, "day": 86400}
_MONTHS = {
    name: index
    for index, name in enumerate(
        ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"], 1
    )
}
_DAYS = {
    name.upper(): index for index, name in enumerate(["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"], 1)
}
_SEARCH_YEARS = 30  # how far ahead a cron expression is searched for its next occurrence


class ScheduleExpressionError(ValueError):
    """EventBridge's refusal of a schedule expression."""

    def __init__(self) -> None:
        super().__init__(INVALID)


@dataclass(frozen=True)
class Rate:
    seconds: int

    def next_after(self, moment: datetime, start: datetime) -> datetime:
        """The first occurrence strictly after moment, for a schedule that started at start."""
        elapsed = (moment - start).total_seconds()
        periods = int(elapsed // self.seconds) + 1 if elapsed >= 0 else 1
        return start + timedelta(seconds=periods * self.seconds)


@dataclass(frozen=True)
class _Field:
    values: frozenset[int]
    last: bool = False  # L (day-of-month: last day; day-of-week alone: Saturday, the week's last day)
    nearest_weekday: int | None = None  # day-of-month nW
    last_weekday: int | None = None  # day-of-week xL: the month's last such day
    nth_weekday: tuple[int, int] | None = None  # day-of-week x#n
    any: bool = False  # ?


@dataclass(frozen=True)
class Cron:
    minutes: frozenset[int]
    hours: frozenset[int]
    days: _Field
    months: frozenset[int]
    weekdays: _Field
    years: frozenset[int]

    def next_after(self, moment: datetime, start: datetime | None = None) -> datetime:
        """The first matching minute strictly after moment (UTC)."""
        moment = moment.astimezone(UTC).replace(second=0, microsecond=0)
        day = moment.date()
        horizon = day.replace(year=min(day.year + _SEARCH_YEARS, 9999))
        while day <= horizon:
            if day.year in self.years and day.month in self.months and self._day_matches(day):
                for hour in sorted(self.hours):
                    for minute in sorted(self.minutes):
                        candidate = datetime(day.year, day.month, day.day, hour, minute, tzinfo=UTC)
                        if candidate > moment:
                            return candidate
            day += timedelta(days=1)
        return datetime.max.replace(tzinfo=UTC)

    def _day_matches(self, day: date) -> bool:
        return self._month_day_matches(day) if self.weekdays.any else self._week_day_matches(day)

    def _month_day_matches(self, day: date) -> bool:
        field = self.days
        last_day = calendar.monthrange(day.year, day.month)[1]
        if field.last:
            return day.day == last_day
        if field.nearest_weekday is not None:
            target = min(field.nearest_weekday, last_day)
            wanted = date(day.year, day.month, target)
            if wanted.weekday() == 5:  # Saturday: the Friday before, unless that leaves the month
                wanted = wanted - timedelta(days=1) if target > 1 else wanted + timedelta(days=2)
            elif wanted.weekday() == 6:  # Sunday: the Monday after, unless that leaves the month
                wanted = wanted + timedelta(days=1) if target < last_day else wanted - timedelta(days=2)
            return day == wanted
        return day.day in field.values

    def _week_day_matches(self, day: date) -> bool:
        field = self.weekdays
        weekday = (day.weekday() + 1) % 7 + 1  # Monday=0 in Python; SUN=1 ... SAT=7 in EventBridge
        last_day = calendar.monthrange(day.year, day.month)[1]
        if field.last:
            return weekday == 7
        if field.last_weekday is not None:
            return weekday == field.last_weekday and day.day + 7 > last_day
        if field.nth_weekday is not None:
            wanted, nth = field.nth_weekday
            return weekday == wanted and (day.day - 1) // 7 + 1 == nth
        return weekday in field.values


Schedule = Rate | Cron


def parse_schedule(expression: str) -> Schedule:
    """A rate or cron expression, or ScheduleExpressionError as EventBridge's PutRule refuses it."""
    rate = _RATE.match(expression)
    if rate:
        value, unit = int(rate.group(1)), rate.group(2)
        if value < 1 or (value == 1) != (not unit.endswith("s")):
            raise ScheduleExpressionError()
        return Rate(value * _UNIT_SECONDS[unit.rstrip("s")])
    cron = _CRON.match(expression)
    if not cron:
        raise ScheduleExpressionError()
    fields = cron.group(1).split()
    if len(fields) != 6:
        raise ScheduleExpressionError()
    minutes, hours, days, months, weekdays, years = fields
    if (days == "?") == (weekdays == "?"):  # exactly one of them must be "?"
        raise ScheduleExpressionError()
    try:
        return Cron(
            minutes=_values(minutes, 0, 59),
            hours=_values(hours, 0, 23),
            days=_day_of_month(days),
            months=_values(months, 1, 12, _MONTHS),
            weekdays=_day_of_week(weekdays),
            years=_values(years, 1970, 2199),
        )
    except ValueError:
        raise ScheduleExpressionError()


def _number(text: str, names: dict[str, int] | None) -> int:
    if names and text.upper() in names:
        return names[text.upper()]
    if not text.isdigit():
        raise ValueError(text)
    return int(text)


def _values(field: str, low: int, high: int, names: dict[str, int] | None = None) -> frozenset[int]:
    """The values of a field made of ``,``-separated ``*``, ``a``, ``a-b``, ``a/step``, ``*/step``, ``a-b/step``."""
    values: set[int] = set()
    for part in field.split(","):
        span, _, step_text = part.partition("/")
        step = int(step_text) if step_text else 1
        if step_text and (not step_text.isdigit() or step < 1):
            raise ValueError(part)
        if span == "*":
            first, last = low, high
        elif "-" in span:
            first_text, last_text = span.split("-", 1)
            first, last = _number(first_text, names), _number(last_text, names)
        else:
            first = _number(span, names)
            last = high if step_text else first
        if not low <= first <= high or not low <= last <= high or first > last:
            raise ValueError(part)
        values.update(range(first, last + 1, step))
    return frozenset(values)


def _day_of_month(field: str) -> _Field:
    if field == "?":
        return _Field(frozenset(), any=True)
    if field == "L":
        return _Field(frozenset(), last=True)
    if field.endswith("W") and field[:-1].isdigit() and 1 <= int(field[:-1]) <= 31:
        return _Field(frozenset(), nearest_weekday=int(field[:-1]))
    return _Field(_values(field, 1, 31))


def _day_of_week(field: str) -> _Field:
    if field == "?":
        return _Field(frozenset(), any=True)
    if field == "L":
        return _Field(frozenset(), last=True)
    if field.endswith("L"):
        return _Field(frozenset(), last_weekday=_weekday(field[:-1]))
    if "#" in field:
        day, _, nth = field.partition("#")
        if not nth.isdigit() or not 1 <= int(nth) <= 5:
            raise ValueError(field)
        return _Field(frozenset(), nth_weekday=(_weekday(day), int(nth)))
    return _Field(_values(field, 1, 7, _DAYS))


def _weekday(text: str) -> int:
    value = _number(text, _DAYS)
    if not 1 <= value <= 7:
        raise ValueError(text)
    return value
