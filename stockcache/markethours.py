"""The US regular trading session: 09:30-16:00 America/New_York, Monday to Friday.

The background refresher runs only inside it by default: outside the session
quotes do not move, so refreshing them would spend upstream budget for nothing.
Exchange holidays are not modelled (a holiday costs one day of refreshes, no
more). Daylight-saving changes are handled by ``zoneinfo``; the ``tzdata``
package supplies the zone on systems without ``/usr/share/zoneinfo``.
"""

from __future__ import annotations

from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

NEW_YORK = ZoneInfo("America/New_York")
SESSION_OPEN = time(9, 30)
SESSION_CLOSE = time(16, 0)


def _local(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, NEW_YORK)


def is_regular_session(ts: float) -> bool:
    """True when unix time ``ts`` falls inside a weekday's 09:30-16:00 New York session."""
    local = _local(ts)
    return local.weekday() < 5 and SESSION_OPEN <= local.time() < SESSION_CLOSE


def next_session_open(ts: float) -> float:
    """Unix time of the next session open strictly after ``ts`` (weekdays only)."""
    local = _local(ts)
    day = local.date()
    while True:
        opening = datetime.combine(day, SESSION_OPEN, tzinfo=NEW_YORK)
        if day.weekday() < 5 and opening > local:
            return opening.timestamp()
        day += timedelta(days=1)


def seconds_until_session(ts: float) -> float:
    """0 inside the session, else the seconds until the next one opens."""
    if is_regular_session(ts):
        return 0.0
    return next_session_open(ts) - ts
