"""Labelled counters and histograms kept as plain numbers, counted from the event loop, that
render themselves in Prometheus' text format; the services' per-call and per-version families.
"""

from __future__ import annotations

from bisect import bisect_left
from itertools import accumulate

from prometheus_client.utils import floatToGoString


def _escaped(text: str) -> str:
    """A label value as the text format writes it."""
    return text.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


class _Tallied:
    """What Tally and TallyHistogram share: plain numbers, counted from the event loop, that a
    scrape renders as text itself. prometheus_client formats every sample anew (its labels
    sorted and escaped, its value through floatToGoString), 10 µs a line, and the per-call
    families hold a series for each agent version a worker served, 15 lines each for the
    resolution histogram: 190 ms of the event loop a scrape, every call waiting meanwhile,
    after 1,150 agent versions (loadtests/README.md, "The scrape"). Here a series' labels are
    rendered once."""

    def __init__(self, name: str, documentation: str, labelnames: list[str], kind: str) -> None:
        if "le" in labelnames:
            raise ValueError("`le` is the histogram buckets' label")
        self._name, self._labelnames = name, labelnames
        exposed = name + "_total" if kind == "counter" else name
        help_text = documentation.replace("\\", r"\\").replace("\n", r"\n")
        self._header = f"# HELP {exposed} {help_text}\n# TYPE {exposed} {kind}\n"
        self._labels: dict[tuple[str, ...], tuple[str, str, str]] = {}
        # Each series' observations at the last `forget_idle`.
        self._seen: dict[tuple[str, ...], float] = {}

    def _observations(self) -> dict[tuple[str, ...], float]:
        """Each series' count of observations."""
        raise NotImplementedError

    def _drop(self, values: tuple[str, ...]) -> None:
        raise NotImplementedError

    def forget_idle(self) -> int:
        """Drop the series that observed nothing since the last call, and return how many.
        Families labelled by agent version get a series for every version a worker serves, and
        a worker serves each version for a while: kept for good, they would make every scrape
        longer and the worker bigger for as long as it runs. Prometheus reads a series that
        comes back as a counter reset."""
        counts = self._observations()
        idle = [values for values, n in counts.items() if self._seen.get(values) == n]
        for values in idle:
            self._drop(values)
            self._labels.pop(values, None)
            del counts[values]
        self._seen = counts
        return len(idle)

    def _labels_of(self, values: tuple[str, ...]) -> tuple[str, str, str]:
        """The series' labels as the text format writes them, sorted by name as prometheus_client
        writes them (`a="1",b="2"`): all of them, those before `le`, those after it."""
        text = self._labels.get(values)
        if text is None:
            pairs = [
                (name, f'{name}="{_escaped(value)}"')
                for name, value in sorted(zip(self._labelnames, values, strict=True))
            ]
            text = self._labels[values] = (
                ",".join(pair for _, pair in pairs),
                ",".join(pair for name, pair in pairs if name < "le"),
                ",".join(pair for name, pair in pairs if name > "le"),
            )
        return text


class Tally(_Tallied):
    """A labelled counter kept as plain integers: counting is one dict update, where a
    prometheus_client child takes a lock on every increment (a tenth of the router's CPU per
    webhook went to the per-call counters)."""

    def __init__(self, name: str, documentation: str, labelnames: list[str]) -> None:
        super().__init__(name, documentation, labelnames, "counter")
        self._counts: dict[tuple[str, ...], int] = {}

    def inc(self, *values: str) -> None:
        self._counts[values] = self._counts.get(values, 0) + 1

    def _observations(self) -> dict[tuple[str, ...], float]:
        return dict(self._counts)

    def _drop(self, values: tuple[str, ...]) -> None:
        del self._counts[values]

    def render(self) -> str:
        """The counter in the text format, as `<name>_total`."""
        name = self._name + "_total"
        return self._header + "".join(
            f"{name}{{{self._labels_of(values)[0]}}} {count}\n"
            for values, count in list(self._counts.items())
        )


class TallyHistogram(_Tallied):
    """A labelled histogram kept as plain numbers, like Tally: per series, the count of each
    bucket (the last one +Inf) and then the sum."""

    def __init__(
        self, name: str, documentation: str, labelnames: list[str], buckets: tuple[float, ...]
    ) -> None:
        super().__init__(name, documentation, labelnames, "histogram")
        self._bounds = buckets
        self._les = [*(floatToGoString(b) for b in buckets), "+Inf"]  # type: ignore[no-untyped-call]
        self._series: dict[tuple[str, ...], list[float]] = {}

    def observe(self, value: float, *values: str) -> None:
        series = self._series.get(values)
        if series is None:
            series = self._series[values] = [0.0] * (len(self._bounds) + 2)
        # A value on a bound counts in that bound's bucket (le), as prometheus_client counts it.
        series[bisect_left(self._bounds, value)] += 1
        series[-1] += value

    def _observations(self) -> dict[tuple[str, ...], float]:
        return {values: sum(series[:-1]) for values, series in self._series.items()}

    def _drop(self, values: tuple[str, ...]) -> None:
        del self._series[values]

    def render(self) -> str:
        """The histogram in the text format: per series its cumulative buckets, count, sum."""
        name = self._name
        lines = [self._header]
        for values, series in list(self._series.items()):
            labels, before, after = self._labels_of(values)
            head = f'{name}_bucket{{{before}{"," if before else ""}le="'
            tail = f'"{"," if after else ""}{after}}} '
            cumulative = list(accumulate(series[:-1]))
            lines.extend(
                f"{head}{le}{tail}{count}\n"
                for le, count in zip(self._les, cumulative, strict=True)
            )
            lines.append(
                f"{name}_count{{{labels}}} {cumulative[-1]}\n{name}_sum{{{labels}}} {series[-1]}\n"
            )
        return "".join(lines)
