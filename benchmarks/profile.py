"""Summarise py-spy's raw (collapsed) stacks: ``python -m benchmarks.profile FILE [--top N]``.

``python -m benchmarks --profile DIR`` attaches ``py-spy record --threads --format raw`` to the
worker of the herd (1 worker) and steady scenarios. This prints, for one such file: the samples
per thread, the functions that were on CPU themselves (self), and the functions with the most
samples below them (inclusive), over all threads and per thread. py-spy leaves out idle threads
(waiting on a lock, a queue or the network), so the samples are where CPU time went.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

_THREAD = re.compile(r"^thread \(\d+\): ?")
_SUFFIX = re.compile(r"-\d+$")


def parse(path: Path) -> list[tuple[str, list[str], int]]:
    out = []
    for line in path.read_text(errors="replace").splitlines():
        line = line.rstrip()
        if not line or " " not in line:
            continue
        stack, _, count = line.rpartition(" ")
        try:
            n = int(count)
        except ValueError:
            continue
        thread = "?"
        match = _THREAD.match(stack)
        if match:
            stack = stack[match.end() :]
            thread, _, stack = stack.partition(";")
            thread = _SUFFIX.sub("-*", thread)
        frames = [f for f in stack.split(";") if f]
        out.append((thread, frames, n))
    return out


def short(frame: str) -> str:
    """``func (path/to/file.py:123)`` -> ``func (file.py)`` for grouping by function."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    path = where.rsplit(":", 1)[0]
    parts = path.split("/")
    keep = "/".join(parts[-2:]) if len(parts) > 1 else path
    return f"{name} ({keep})"


def summary(path: Path, top: int = 15, threads: bool = True) -> str:
    stacks = parse(path)
    total = sum(n for _, _, n in stacks) or 1
    by_thread: Counter[str] = Counter()
    selfs: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    per_thread_incl: dict[str, Counter[str]] = {}
    for thread, frames, n in stacks:
        by_thread[thread] += n
        if frames:
            selfs[short(frames[-1])] += n
        seen = set()
        counter = per_thread_incl.setdefault(thread, Counter())
        for frame in frames:
            key = short(frame)
            if key in seen:
                continue
            seen.add(key)
            incl[key] += n
            counter[key] += n
    lines = [f"{path.name}: {total} samples on CPU"]
    lines.append("\nsamples per thread:")
    for thread, n in by_thread.most_common():
        lines.append(f"  {n / total:6.1%}  {thread}")
    lines.append(f"\ntop {top} self (on CPU in the function itself):")
    for key, n in selfs.most_common(top):
        lines.append(f"  {n / total:6.1%}  {key}")
    lines.append(f"\ntop {top} inclusive (the function and what it calls):")
    boring = (
        "_bootstrap",
        "Thread.run",
        "<module>",
        "execute_from_command_line",
        "ManagementUtility.execute",
        "run_from_argv",
        "BaseCommand.execute",
        "Command.handle",
        "Runner.run ",
    )
    for key, n in incl.most_common(top + 12):
        if any(b in key for b in boring):
            continue
        lines.append(f"  {n / total:6.1%}  {key}")
    if threads:
        for thread, counter in sorted(per_thread_incl.items(), key=lambda kv: -by_thread[kv[0]]):
            share = by_thread[thread] / total
            if share < 0.05:
                continue
            lines.append(f"\n[{thread}] {share:.1%} of samples; inclusive within the thread:")
            for key, n in counter.most_common(top + 12):
                if any(b in key for b in boring):
                    continue
                lines.append(f"  {n / by_thread[thread]:6.1%}  {key}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile")
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--no-threads", action="store_true")
    args = parser.parse_args()
    for path in args.files:
        print(summary(path, args.top, not args.no_threads))
        print()


if __name__ == "__main__":
    main()
