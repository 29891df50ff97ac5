"""The geometry of the overview's charts: pure arithmetic, tested without a database."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.utils import timezone
from django.utils.translation import gettext

from django_alarms.types import Outcome

# -- overview --------------------------------------------------------------------------------

#: Outcomes from the bottom of a stacked bar to its top.
STACK = (Outcome.OK, Outcome.RETRY, Outcome.ERROR, Outcome.TIMEOUT, Outcome.LOST)


@dataclass
class Segment:
    series: str
    count: int
    y: float
    height: float


@dataclass
class Bar:
    x: float
    width: float
    label: str
    tooltip: str
    total: int
    link: str
    segments: list[Segment] = field(default_factory=list)

    @property
    def center(self) -> float:
        return self.x + self.width / 2


@dataclass
class Tick:
    y: float
    label: str


@dataclass
class Chart:
    """A bar chart's geometry, drawn as SVG by the overview template (no JavaScript)."""

    title: str
    y_title: str
    x_title: str
    bars: list[Bar]
    ticks: list[Tick]
    legend: list[tuple[str, str, int]]
    empty_text: str
    width: int = 960
    height: int = 250
    left: int = 48
    right: int = 12
    top: int = 12
    bottom: int = 44

    @property
    def plot_bottom(self) -> int:
        return self.height - self.bottom

    @property
    def plot_height(self) -> int:
        return self.plot_bottom - self.top

    @property
    def plot_right(self) -> int:
        return self.width - self.right

    @property
    def total(self) -> int:
        return sum(bar.total for bar in self.bars)

    @property
    def x_title_y(self) -> int:
        return self.height - 6

    @property
    def x_label_y(self) -> int:
        return self.plot_bottom + 16

    @property
    def middle_x(self) -> float:
        return (self.left + self.plot_right) / 2

    @property
    def middle_y(self) -> float:
        return (self.top + self.plot_bottom) / 2


def _nice_step(value: float) -> int:
    """The smallest of 1, 2, 5, 10, 20, 50, ... at least ``value``."""
    if value <= 1:
        return 1
    power = 10 ** math.floor(math.log10(value))
    for factor in (1, 2, 5, 10):
        if factor * power >= value:
            return int(factor * power)
    return int(10 * power)  # pragma: no cover - the loop always returns


def _chart(
    *,
    title: str,
    y_title: str,
    hours: Sequence[tuple[datetime, dict[str, int]]],
    series: Sequence[tuple[str, str]],
    link: Callable[[datetime], str],
    empty_text: str,
    first_label: str | None = None,
    last_label: str | None = None,
) -> Chart:
    zone = timezone.get_current_timezone()
    chart = Chart(
        title=title,
        y_title=y_title,
        x_title=gettext("hour (%(zone)s)") % {"zone": timezone.get_current_timezone_name()},
        bars=[],
        ticks=[],
        legend=[],
        empty_text=empty_text,
    )
    peak = max((sum(counts.values()) for _hour, counts in hours), default=0)
    step = _nice_step(peak / 4) if peak else 1
    top_value = max(step * math.ceil(peak / step), step)
    scale = chart.plot_height / top_value
    chart.ticks = [
        Tick(y=chart.plot_bottom - value * scale, label=f"{value:,}")
        for value in range(0, top_value + 1, step)
    ]
    slot = (chart.plot_right - chart.left) / max(len(hours), 1)
    for index, (hour, counts) in enumerate(hours):
        local = hour.astimezone(zone)
        label = local.strftime("%H:%M")
        if index == 0 and first_label:
            label = first_label
        elif index == len(hours) - 1 and last_label:
            label = last_label
        elif index % 3 or (last_label and index >= len(hours) - 2):
            label = ""
        total = sum(counts.values())
        parts = ", ".join(
            f"{counts.get(name, 0):,} {title_}" for name, title_ in series if counts.get(name)
        )
        tooltip = "{} to {}: {}".format(
            local.strftime("%a %Y-%m-%d %H:%M"),
            (local + timedelta(hours=1)).strftime("%H:%M %Z"),
            parts or gettext("none"),
        )
        bar = Bar(
            x=chart.left + index * slot + slot * 0.12,
            width=slot * 0.76,
            label=label,
            tooltip=tooltip,
            total=total,
            link=link(hour),
        )
        base = float(chart.plot_bottom)
        for name, _title in series:
            count = counts.get(name, 0)
            if not count:
                continue
            height = count * scale
            base -= height
            bar.segments.append(Segment(series=name, count=count, y=base, height=height))
        chart.bars.append(bar)
    chart.legend = [
        (name, title_, sum(counts.get(name, 0) for _hour, counts in hours))
        for name, title_ in series
    ]
    return chart
