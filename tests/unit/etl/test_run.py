"""The ETL run's lingering loop (etl/run.py) on a simulated clock: no stack. The scheduled job on
the running stack: tests/stack/etl/test_job.py."""

from __future__ import annotations


def test_lingering_runs_start_an_interval_apart_and_pick_up_a_quiet_arrival_at_once(monkeypatch):
    """The lingering job's spacing, on a simulated clock (pure logic; tests/stack/etl/test_job.py
    runs it for real): runs start at least `poll_seconds` apart while work keeps waiting, and once that
    interval has passed, input that lands is picked up within ARRIVAL_CHECK_SECONDS, not after a
    whole interval more."""
    from etl import run as etl_run

    clock = {"now": 0.0}
    started: list[float] = []

    class Warehouse:
        def ensure_schema(self):
            pass

        def renew(self, holder, ttl):
            pass

        def release(self, holder):
            pass

        def close(self):
            pass

    def one_run(*args):
        started.append(clock["now"])
        clock["now"] += 1.0  # every run takes one second
        return "result"

    monkeypatch.setattr(etl_run, "open_warehouse", lambda cfg: Warehouse())
    monkeypatch.setattr(etl_run, "take_lease", lambda warehouse, holder, wait: None)
    monkeypatch.setattr(etl_run, "_run", one_run)
    monkeypatch.setattr(etl_run.time, "monotonic", lambda: clock["now"])
    monkeypatch.setattr(etl_run.time, "sleep", lambda seconds: clock.__setitem__("now", clock["now"] + seconds))
    # Input lands at 0 (the tick's first run), steadily until 12 s, then once more at 20.2 s.
    arrivals = [0.0, 2.0, 4.0, 6.0, 8.0, 10.0, 12.0, 20.2]

    def work_waiting():
        waiting = [a for a in arrivals if a <= clock["now"] and a > (started[-1] if started else -1)]
        return bool(waiting)

    results = etl_run.run_while_busy(holder="t", linger_seconds=15, poll_seconds=5, work_waiting=work_waiting)
    assert started[:4] == [0.0, 5.0, 10.0, 15.0]  # busy: one interval apart from start to start
    assert 20.2 <= started[4] <= 20.2 + etl_run.ARRIVAL_CHECK_SECONDS  # quiet: picked up at once
    assert len(results) == len(started) == 5  # then nothing for 15 s: the tick ended
