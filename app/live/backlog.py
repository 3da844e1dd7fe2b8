"""How far behind the live pool is, as this API process sees it, and what follows from it.

Every final transcript a live session waits for from the live pool (a FunASR final, the Realtime transcript
started at the speaker's pause) is tracked from sent to answered. The age of the oldest one still waiting is
the lag: on an idle pool it is the time a final takes (well under a second for a spoken sentence), on a pool
offered more speech than it transcribes it grows for as long as the overload lasts. Two things follow:

- above `live_behind_lag_s` sessions send no partial transcripts, and their finals are decoded in one pass
  (no retries at Whisper's fallback temperatures): the pool spends its time on finals, each at its least cost;
- above `live_admit_max_lag_s` a new live session is refused (close 1013, try again later, with the lag in the
  reason): the sessions already open keep every final, and one more speaker would make each of them wait longer.

The lag is per API process (each tracks its own sessions' finals); they share the live pool, so with sessions
spread over processes each sees about the same lag. Nothing here holds audio or text.
"""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import Iterator

from app import metrics as app_metrics
from workers.core.settings import Settings


class Backlog:
    """The final transcripts this process waits for: when each was sent."""

    def __init__(self) -> None:
        self._sent: dict[int, float] = {}
        self._ids = itertools.count()

    @contextlib.contextmanager
    def waiting(self) -> Iterator[None]:
        """Around one final transcript's send and wait (left however it ends: answered, failed or cancelled)."""
        key = next(self._ids)
        self._sent[key] = time.monotonic()
        try:
            yield
        finally:
            self._sent.pop(key, None)

    @property
    def waiting_count(self) -> int:
        return len(self._sent)

    def lag_s(self) -> float:
        oldest = min(self._sent.values(), default=None)
        lag = 0.0 if oldest is None else time.monotonic() - oldest
        app_metrics.LIVE_FINAL_LAG_SECONDS.set(lag)
        return lag


BACKLOG = Backlog()


def behind(settings: Settings) -> bool:
    """The pool is behind on finals (0 in the setting: never said): partial transcripts wait, and finals are
    decoded once, without the fallback temperatures' retries."""
    limit = settings.live_behind_lag_s
    return bool(limit) and BACKLOG.lag_s() > limit


def refusal(settings: Settings) -> str | None:
    """Why a new live session is refused now (the pool is too far behind), or None to admit it."""
    limit = settings.live_admit_max_lag_s
    if not limit:
        return None
    lag = BACKLOG.lag_s()
    if lag <= limit:
        return None
    app_metrics.LIVE_REFUSED.labels(reason="behind").inc()
    return f"the live transcription pool is {lag:.0f} s behind; try again later"
