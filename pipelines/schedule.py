"""Cron helpers on croniter: validate, describe, fire times and the partitions a run loads.

Every function takes an IANA time-zone name: cron fields are read as wall-clock time in that
zone, the way Airflow's CronDataIntervalTimetable (the generated DAGs' timetable) reads them, so
"0 2 * * *" in Europe/London fires at 02:00 London time in summer and winter alike.

Airflow's view of a scheduled run, which the portal must mirror: its data interval is
[previous fire, this fire), its logical_date is the interval *start*, and it loads the partitions
`partitions_for_fire(fire_time=data_interval_end)` returns.
"""

from __future__ import annotations

import functools
import zoneinfo
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from cron_descriptor import Options, get_description
from croniter import CroniterBadCronError, CroniterBadDateError, croniter

PRESETS = {
    "hourly": "0 * * * *",
    "daily": "0 2 * * *",
    "weekly": "0 3 * * 1",
}
# Cron macros Airflow users type out of habit, written as the five fields they stand for.
MACROS = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}
GRAINS = {"day": timedelta(days=1), "hour": timedelta(hours=1)}
# A cron that cannot fire within this many years is treated as never firing ("0 0 30 2 *").
MAX_YEARS_BETWEEN_FIRES = 5
# Fire times sampled to find the smallest gap between two runs (a year of hourly runs is more
# than enough to see every pattern croniter can express within a week or a month).
GAP_SAMPLE = 400


class ScheduleError(ValueError):
    """A schedule or time zone the portal cannot use; str() is the user-facing message."""


@functools.cache
def _zone_names() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def zone_names() -> list[str]:
    """Return every IANA zone name, sorted (for the form's suggestions)."""
    return sorted(_zone_names())


def validate_timezone(name: str) -> ZoneInfo:
    """Return the zone for an IANA name, or raise ScheduleError."""
    if name not in _zone_names():
        raise ScheduleError(f"“{name}” is not an IANA time zone (for example Europe/London, UTC).")
    return ZoneInfo(name)


def validate_cron(expr: str) -> str:
    """Return the normalised five-field cron for `expr`, or raise ScheduleError.

    Accepts the preset names (hourly, daily, weekly). Rejects seconds fields, unknown syntax and
    expressions that never fire, like the 30th of February.
    """
    expr = " ".join(expr.split())
    expr = PRESETS.get(expr.lower(), MACROS.get(expr.lower(), expr))
    if not expr:
        raise ScheduleError("Enter a cron expression, for example “0 2 * * *” (daily at 02:00).")
    if len(expr.split(" ")) != 5:
        raise ScheduleError(
            "Use five cron fields: minute hour day-of-month month day-of-week (e.g. “0 2 * * *”)."
        )
    try:
        it = croniter(
            expr,
            datetime(2026, 1, 1, tzinfo=ZoneInfo("UTC")),
            max_years_between_matches=MAX_YEARS_BETWEEN_FIRES,
        )
        it.get_next(datetime)
    except CroniterBadDateError:
        raise ScheduleError("This schedule never fires (no date matches all its fields).") from None
    except (CroniterBadCronError, ValueError, KeyError) as exc:
        raise ScheduleError(f"Not a valid cron expression: {exc}.") from None
    return expr


def describe(expr: str) -> str:
    """Return a plain-English description of a valid cron ("At 02:00")."""
    options = Options()
    options.use_24hour_time_format = True
    options.verbose = True
    return get_description(expr, options)


def next_fire_times(expr: str, tz: str, n: int = 5, *, after: datetime) -> list[datetime]:
    """Return the next `n` fire times strictly after `after`, as aware datetimes in `tz`."""
    zone = ZoneInfo(tz)
    it = croniter(expr, after.astimezone(zone), max_years_between_matches=MAX_YEARS_BETWEEN_FIRES)
    return [it.get_next(datetime).astimezone(zone) for _ in range(n)]


def previous_fire_time(expr: str, tz: str, *, before: datetime) -> datetime:
    """Return the latest fire time strictly before `before`, aware in `tz`."""
    zone = ZoneInfo(tz)
    it = croniter(expr, before.astimezone(zone), max_years_between_matches=MAX_YEARS_BETWEEN_FIRES)
    return it.get_prev(datetime).astimezone(zone)


def smallest_gap(expr: str, tz: str, *, after: datetime) -> timedelta:
    """Return the shortest time between two consecutive fires, over the next GAP_SAMPLE fires."""
    times = next_fire_times(expr, tz, GAP_SAMPLE, after=after)
    return min(b - a for a, b in zip(times, times[1:], strict=False))


def floor_to_grain(moment: datetime, grain: str, tz: str) -> datetime:
    """Return the start of the partition holding `moment`, as a naive wall-clock time in `tz`."""
    local = moment.astimezone(ZoneInfo(tz)).replace(tzinfo=None, fold=0)
    if grain == "hour":
        return local.replace(minute=0, second=0, microsecond=0)
    return local.replace(hour=0, minute=0, second=0, microsecond=0)


def partitions_for_fire(expr: str, tz: str, grain: str, fire_time: datetime) -> list[datetime]:
    """Return the partitions (naive wall-clock starts in `tz`) a run firing at `fire_time` loads.

    The rule the generated DAG follows: a run loads every partition that completed between the
    previous fire time and this one, i.e. starts in [floor(previous fire), floor(this fire)).
    A daily 02:00 run loads yesterday; a weekly run with day grain loads the last seven days.
    """
    previous = previous_fire_time(expr, tz, before=fire_time)
    start = floor_to_grain(previous, grain, tz)
    end = floor_to_grain(fire_time, grain, tz)
    step = GRAINS[grain]
    result = []
    while start < end:
        result.append(start)
        start += step
    return result


def parse_partition(value: str, grain: str) -> datetime:
    """Parse "2026-11-10" (day grain) or "2026-11-10T13:00" (hour grain); raise ScheduleError."""
    value = value.strip()
    try:
        if grain == "hour":
            parsed = datetime.fromisoformat(value)
            if parsed.tzinfo is not None or parsed.minute or parsed.second or parsed.microsecond:
                raise ValueError
            return parsed
        return datetime.combine(date.fromisoformat(value), datetime.min.time())
    except ValueError:
        example = "2026-11-10T13:00" if grain == "hour" else "2026-11-10"
        raise ScheduleError(f"Enter the partition as {example}.") from None


def format_partition(start: datetime, grain: str) -> str:
    return start.strftime("%Y-%m-%dT%H:00") if grain == "hour" else start.date().isoformat()
