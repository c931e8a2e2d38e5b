"""Durations as histogram buckets: command times (dispatcher) and Redis round trips (engine).

Pure and cheap: a bucket index and two additions per observation; the metrics front end turns
the series into Prometheus histograms.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

#: Histogram buckets (seconds) of command durations: fast commands up to the longest long poll.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
#: Buckets of Redis round trips: a tenth of a millisecond up to the default one-second timeout.
REDIS_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


class Latency:
    """Durations per pair of labels (front end and command, or what and which script)."""

    def __init__(self, buckets: tuple[float, ...] = BUCKETS) -> None:
        self.buckets = buckets
        #: (label, label) -> [per-bucket counts (not cumulative), sum, count]
        self.series: dict[tuple[str, str], list[Any]] = {}

    def observe(self, first: str, second: str, seconds: float) -> None:
        series = self.series.get((first, second))
        if series is None:
            series = self.series[(first, second)] = [[0] * len(self.buckets), 0.0, 0]
        for i, bound in enumerate(self.buckets):
            if seconds <= bound:
                series[0][i] += 1
                break
        series[1] += seconds
        series[2] += 1




#: Buckets of push deliveries: a millisecond up to the longest push timeout (300 s).
PUSH_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


class PushMetrics:
    """This process's push deliveries: acked ones and failed ones (by reason) per queue, and how
    long each delivery took (by queue and outcome: ok or failed)."""

    def __init__(self) -> None:
        self.pushed: Counter[str] = Counter()
        self.failed: Counter[tuple[str, str]] = Counter()
        self.latency = Latency(PUSH_BUCKETS)
