"""The bench's arithmetic (bench/pipeline.py) without a stack: CPU by phase from cumulative samples.
The bench on a stack: tests/stack/bench/test_pipeline.py."""

from __future__ import annotations


def test_cpu_by_phase_cuts_cumulative_samples_at_the_phase_bounds():
    from bench.pipeline import cpu_by_phase, phase_table

    # Cumulative CPU seconds per group, sampled at t = 0, 1, 3 ("b" appears after the first sample).
    series = [(0.0, {"a": 0.0}), (1.0, {"a": 1.0, "b": 0.5}), (3.0, {"a": 1.0, "b": 2.5})]
    phases = cpu_by_phase(series, [("first", 0.5, 2.0), ("second", 2.0, 3.5)])
    # Bounds between samples are interpolated; a bound after the last sample takes the last sample.
    assert phases["first"] == {"seconds": 1.5, "cpu_seconds": {"b": 1.25, "a": 0.5}}
    assert phases["second"] == {"seconds": 1.5, "cpu_seconds": {"b": 1.0, "a": 0.0}}
    lines = phase_table(phases, cores=2)
    assert lines[1] == "| ours by phase: cores busy (CPU s / wall s) | wall s | b | a | idle of 2 |"
    # first: b 1.25/1.5, a 0.5/1.5, idle 2 - 1.75/1.5
    assert lines[3] == "| first | 1.5 | 0.83 | 0.33 | 0.83 |"
    assert lines[4] == "| second | 1.5 | 0.67 | 0.00 | 1.33 |"
