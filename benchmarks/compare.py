"""Compare two benchmark result files, figure by figure: ``python -m benchmarks.compare A B``.

For each figure both runs have: the median and the spread [min-max] of each run, as measured
values and as ratios to the same run's baseline (when the figure has one). A figure is
*worse* only when the two spreads of its ratio (or of its value, without a baseline) do not
overlap and B's lies on the bad side; *better* the other way round; overlapping spreads (what
the runs' own noise covers) are *same*. Lower is better unless the unit is a rate (``/s``) or
a factor (``x``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

HIGHER_IS_BETTER = ("/s", "x")


def _load(path: Path) -> dict[str, dict[str, Any]]:
    data = json.loads(path.read_text())
    return {row["key"]: row for row in data["summary"]}


def _span(row: dict[str, Any]) -> tuple[str, float, float, float] | None:
    """(what is compared, median, min, max): the ratio to the baseline, else the value."""
    if row.get("ratio_median") is not None:
        return "ratio", row["ratio_median"], row["ratio_min"], row["ratio_max"]
    if row.get("median") is None:
        return None
    return "value", row["median"], row["min"], row["max"]


def verdict(before: dict[str, Any], after: dict[str, Any]) -> str:
    a, b = _span(before), _span(after)
    if a is None or b is None or a[0] != b[0]:
        return "n/a"
    higher = before["unit"] in HIGHER_IS_BETTER
    _, _, a_min, a_max = a
    _, _, b_min, b_max = b
    if higher:
        if b_max < a_min:
            return "worse"
        if b_min > a_max:
            return "better"
    else:
        if b_min > a_max:
            return "worse"
        if b_max < a_min:
            return "better"
    return "same"


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def table(before: dict[str, dict[str, Any]], after: dict[str, dict[str, Any]]) -> list[str]:
    lines = [
        "| figure | unit | before median [min-max] | after median [min-max] "
        "| before ratio | after ratio | verdict |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for key, a in before.items():
        b = after.get(key)
        if b is None:
            continue

        def cell(row: dict[str, Any]) -> str:
            return f"{_fmt(row['median'])} [{_fmt(row['min'])}-{_fmt(row['max'])}]"

        def ratio(row: dict[str, Any]) -> str:
            if row.get("ratio_median") is None:
                return "-"
            return (
                f"{_fmt(row['ratio_median'])} [{_fmt(row['ratio_min'])}-{_fmt(row['ratio_max'])}]"
            )

        lines.append(
            f"| {a['label']} | {a['unit']} | {cell(a)} | {cell(b)} | {ratio(a)} | {ratio(b)} "
            f"| {verdict(a, b)} |"
        )
    new = [key for key in after if key not in before]
    if new:
        lines.append("")
        lines.append("Only in the second run: " + ", ".join(new))
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    args = parser.parse_args()
    before, after = _load(args.before), _load(args.after)
    print("\n".join(table(before, after)))
    verdicts = [verdict(before[key], after[key]) for key in before if key in after]
    print()
    print(", ".join(f"{name}: {verdicts.count(name)}" for name in ("better", "same", "worse")))


if __name__ == "__main__":
    main()
