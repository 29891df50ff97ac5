"""Figures, the targets of issue 6, and the table (medians with min-max over the runs).

A figure is one number of one run with the baseline it is compared with (measured in the same
run on the same database) and its ratio to it (``value / baseline``). Targets are printed next
to the median, met or missed by how much; nothing here ever fails a run.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from benchmarks.harness import median


@dataclass(frozen=True)
class Goal:
    """``on``: "value" or "ratio"; ``op``: ">=", "<=" or "within" (``low`` .. ``high``)."""

    on: str
    op: str
    high: float
    low: float = 0.0
    label: str = ""
    vendors: tuple[str, ...] = ("postgresql", "sqlite")

    def check(self, value: float) -> tuple[bool, str]:
        if math.isnan(value):
            return False, "no value"
        if self.op == ">=":
            if value >= self.high:
                return True, "met"
            return False, f"missed: {1 - value / self.high:.0%} short"
        if self.op == "<=":
            if value <= self.high:
                return True, "met"
            return False, f"missed: {value / self.high:.1f}x the limit"
        if self.low <= value <= self.high:
            return True, "met"
        return False, f"missed: {value - (self.high if value > self.high else self.low):+.0%}"


@dataclass
class Figure:
    key: str  # stable identifier, e.g. "herd.1w.drain"
    label: str
    value: float
    unit: str
    baseline: float | None = None
    baseline_label: str = ""
    goals: tuple[Goal, ...] = ()
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        if self.baseline is None or self.baseline == 0 or math.isnan(self.baseline):
            return None
        return self.value / self.baseline


def fmt(value: float | None, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if unit in ("/s", "rows/s", "rows"):
        text = f"{value:,.0f}"
    elif unit == "MB":
        text = f"{value:,.1f}"
    elif unit == "ms":
        text = f"{value:,.2f}" if abs(value) < 10 else f"{value:,.1f}"
    elif unit == "s":
        text = f"{value:,.2f}"
    elif unit == "%":
        text = f"{value:,.1f}"
    elif unit == "x":
        text = f"{value:.2f}"
    elif unit in ("us", "µs"):
        text = f"{value:,.1f}"
    else:
        text = f"{value:,.3g}"
    return f"{text} {unit}".rstrip() if unit not in ("x",) else f"{text}x"


def fmt_ratio(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "-"
    if value >= 100:
        return f"{value:,.0f}x"
    if value >= 10:
        return f"{value:.1f}x"
    return f"{value:.2f}x"


@dataclass
class Summary:
    key: str
    label: str
    unit: str
    values: list[float]
    ratios: list[float]
    baselines: list[float]
    baseline_label: str
    goals: tuple[Goal, ...]
    notes: list[str]

    @property
    def value(self) -> float:
        return median(self.values)

    @property
    def ratio(self) -> float | None:
        return median(self.ratios) if self.ratios else None

    def spread(self, values: Sequence[float], unit: str, ratio: bool = False) -> str:
        show = fmt_ratio if ratio else (lambda v: fmt(v, unit).replace(f" {unit}", ""))
        if len(values) < 2:
            return show(median(values)) if values else "-"
        return f"{show(median(values))} [{show(min(values))}-{show(max(values))}]"

    def verdicts(self, vendor: str) -> list[str]:
        out = []
        for goal in self.goals:
            if vendor not in goal.vendors:
                continue
            subject = self.value if goal.on == "value" else self.ratio
            if subject is None:
                continue
            ok, how = goal.check(subject)
            out.append(f"{goal.label}: {'met' if ok else how.upper()}")
        return out

    def as_json(self, vendor: str) -> dict[str, Any]:
        return {
            "key": self.key,
            "label": self.label,
            "unit": self.unit,
            "median": self.value,
            "min": min(self.values) if self.values else None,
            "max": max(self.values) if self.values else None,
            "values": self.values,
            "baseline": self.baseline_label,
            "baseline_median": median(self.baselines) if self.baselines else None,
            "ratio_median": self.ratio,
            "ratio_min": min(self.ratios) if self.ratios else None,
            "ratio_max": max(self.ratios) if self.ratios else None,
            "targets": self.verdicts(vendor),
            "notes": self.notes,
        }


def summarise(runs: Iterable[list[Figure]]) -> list[Summary]:
    order: list[str] = []
    groups: dict[str, list[Figure]] = {}
    for figures in runs:
        for fig in figures:
            if fig.key not in groups:
                order.append(fig.key)
                groups[fig.key] = []
            groups[fig.key].append(fig)
    out = []
    for key in order:
        figs = groups[key]
        first = figs[0]
        out.append(
            Summary(
                key=key,
                label=first.label,
                unit=first.unit,
                values=[f.value for f in figs],
                ratios=[f.ratio for f in figs if f.ratio is not None],
                baselines=[f.baseline for f in figs if f.baseline is not None],
                baseline_label=first.baseline_label,
                goals=first.goals,
                notes=sorted({f.note for f in figs if f.note}),
            )
        )
    return out


def table(summaries: Sequence[Summary], vendor: str, runs: int) -> str:
    head = (
        "figure",
        "median [min-max]" if runs > 1 else "value",
        "baseline (same run)",
        "ratio",
        "target",
    )
    rows = [head]
    for s in summaries:
        baseline = "-"
        if s.baselines:
            baseline = f"{s.baseline_label} {fmt(median(s.baselines), _baseline_unit(s))}"
        rows.append(
            (
                s.label,
                f"{s.spread(s.values, s.unit)} {s.unit}".rstrip()
                if s.unit not in ("x",)
                else s.spread(s.values, s.unit),
                baseline,
                s.spread(s.ratios, "", ratio=True) if s.ratios else "-",
                "; ".join(s.verdicts(vendor)) or "",
            )
        )
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(head))]
    lines = []
    for n, r in enumerate(rows):
        lines.append(" | ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
        if n == 0:
            lines.append("-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown(summaries: Sequence[Summary], vendor: str, runs: int) -> str:
    out = [
        "| figure | median [min-max] | baseline (same run) | ratio | target |",
        "|---|---|---|---|---|",
    ]
    for s in summaries:
        baseline = (
            f"{s.baseline_label} {fmt(median(s.baselines), _baseline_unit(s))}"
            if s.baselines
            else "-"
        )
        value = (
            f"{s.spread(s.values, s.unit)} {s.unit}".rstrip()
            if s.unit != "x"
            else s.spread(s.values, s.unit)
        )
        ratio = s.spread(s.ratios, "", ratio=True) if s.ratios else "-"
        out.append(
            f"| {s.label} | {value} | {baseline} | {ratio} | {'; '.join(s.verdicts(vendor))} |"
        )
    return "\n".join(out)


def _baseline_unit(s: Summary) -> str:
    return s.unit if s.unit != "x" else "x"


def figure_json(fig: Figure) -> dict[str, Any]:
    data = asdict(fig)
    data["ratio"] = fig.ratio
    data["goals"] = [asdict(g) for g in fig.goals]
    return data
