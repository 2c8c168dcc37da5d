"""Benchmark support: `make bench` prints each group's ratios against its struct baselines.

Benchmarks named ``test_baseline_*`` are the references of their group; after the run every
other benchmark of the group is printed as ``median / baseline median`` and ``min / baseline
min`` for each baseline. The two benchmarks of a ratio run one after the other, so on a shared
machine a neighbour's load can land on one and not the other; the minimum (timeit's advice for
micro-benchmarks) is the steadier of the two figures. Benchmarks are not tests: nothing here
asserts a timing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pytest


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    session = getattr(config, "_benchmarksession", None)
    if session is None or not session.benchmarks:
        return
    groups: dict[str, list[Any]] = {}
    for bench in session.benchmarks:
        groups.setdefault(bench.group or "", []).append(bench)
    rates = [b for b in session.benchmarks if "requests_per_second" in b.extra_info]
    runs = [b for b in session.benchmarks if "executions_per_round" in b.extra_info]
    if rates or runs:
        terminalreporter.section("throughput")
        for bench in rates:
            rate = 1 / bench.stats.median
            terminalreporter.write_line(f"{bench.name:<48} {rate:10.0f} requests/s")
        for bench in runs:  # one round runs a whole corpus (tests/benchmarks/test_fuzz_targets)
            rate = bench.extra_info["executions_per_round"] / bench.stats.median
            terminalreporter.write_line(f"{bench.name:<48} {rate:10.0f} executions/s")
    terminalreporter.section("ratios: median / baseline median (min / baseline min)")
    for group, benches in sorted(groups.items()):
        bases = [b for b in benches if b.name.startswith("test_baseline")]
        others = [b for b in benches if b not in bases]
        for base in bases:
            terminalreporter.write_line(
                f"{group}: vs {base.name} ({base.stats.median * 1e6:.3f} us)"
            )
            for bench in others:
                ratio = bench.stats.median / base.stats.median
                low = bench.stats.min / base.stats.min
                terminalreporter.write_line(
                    f"    {bench.name:<44} {bench.stats.median * 1e6:9.3f} us  {ratio:7.2f}x"
                    f"  (min {bench.stats.min * 1e6:.3f} us, {low:.2f}x)"
                )
