"""structlog set-up shared by both services: one JSON object per line on stderr."""

from __future__ import annotations

import logging
import sys
import time

import structlog


def configure_logging(level: int = logging.INFO) -> None:
    """JSON logs with ISO timestamps; context bound with structlog.contextvars is merged in."""
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )


class Sampler:
    """Says when an event too frequent to log every time is due a line: at most one every
    `interval_s`, the first at once. Each line stands for the occurrences since the last."""

    def __init__(self, interval_s: float) -> None:
        self._interval_s = interval_s
        self._next = 0.0
        self._count = 0

    def tick(self) -> int:
        """0 while no line is due; else how many occurrences the line is for, this one
        included."""
        self._count += 1
        now = time.monotonic()
        if now < self._next:
            return 0
        self._next = now + self._interval_s
        count, self._count = self._count, 0
        return count
