"""The job runner: latest request per slot wins, stale results are dropped, jobs of one slot never overlap."""

from __future__ import annotations

import threading
import time

from deepvis_app.gui.jobs import Jobs


def test_latest_wins_and_slot_jobs_never_overlap(qtbot):
    jobs = Jobs()
    active = []  # threads inside a job of slot "a" right now
    overlap = []
    got: list = []
    lock = threading.Lock()

    def slow(tag):
        def fn(abort):
            with lock:
                active.append(tag)
                overlap.append(len(active))
            try:
                for i in range(20):
                    if abort.is_set():
                        return None
                    time.sleep(0.02)
                    yield (tag, i)
                return tag
            finally:
                with lock:
                    active.remove(tag)
        return fn

    first = jobs.start("a", slow("first"), on_yield=lambda v: got.append(("y",) + v), on_done=lambda v: got.append(v))
    qtbot.waitUntil(lambda: any(g[0] == "y" for g in got), timeout=5000)
    second = jobs.start("a", slow("second"), on_yield=lambda v: got.append(("y",) + v),
                        on_done=lambda v: got.append(v))
    assert first.cancelled and jobs.current("a") is second
    qtbot.waitUntil(lambda: "second" in got, timeout=10000)
    assert max(overlap) == 1  # the second started after the first had stopped
    assert "first" not in got  # the cancelled job's result is dropped
    firsts = [g for g in got if g[:2] == ("y", "first")]
    seconds = [g for g in got if g[:2] == ("y", "second")]
    assert len(seconds) == 20 and got.index(seconds[0]) > got.index(firsts[-1])
    qtbot.waitUntil(lambda: jobs.current("a") is None, timeout=5000)


def test_errors_become_one_line_and_other_slots_run_alongside(qtbot):
    from deepvis_app.errors import DeepVisError

    jobs = Jobs()
    errors, done = [], []

    def bad(_abort):
        raise DeepVisError("no such layer 'x'")

    def boom(_abort):
        raise ValueError("bad value")

    jobs.start("a", bad, on_error=errors.append)
    jobs.start("b", boom, on_error=errors.append)
    jobs.start("c", lambda _abort: 42, on_done=done.append)
    qtbot.waitUntil(lambda: len(errors) == 2 and done == [42], timeout=5000)
    assert sorted(errors) == ["ValueError: bad value", "no such layer 'x'"]


def test_a_finished_jobs_inputs_and_callbacks_are_freed(qtbot):
    """What a job captured (a frame, a map) and the callbacks given to it are freed once it has stopped: Qt holds
    the connections on the C++ side, where Python's collector cannot break the job -> worker -> callback cycle,
    so a window running a job per frame ("Where it looks") kept every frame's inputs."""
    import gc
    import weakref

    import numpy as np

    jobs = Jobs()
    gone, handles = [], []
    for i in range(5):
        frame = np.full((64, 64, 3), i, np.uint8)
        gone.append(weakref.ref(frame.base if frame.base is not None else frame))
        on_done = type("Callback", (), {"__call__": lambda self, v: None})()
        gone.append(weakref.ref(on_done))
        handles.append(jobs.start("slot", lambda abort, frame=frame: int(frame.sum()), on_done=on_done))
        del frame, on_done
        qtbot.waitUntil(lambda: jobs.current("slot") is None, timeout=5000)
    qtbot.waitUntil(lambda: all(job.stopped for job in handles), timeout=5000)
    qtbot.wait(50)
    gc.collect()
    assert [r() is None for r in gone] == [True] * len(gone)


def test_a_running_job_is_counted_for_the_live_worker(qtbot):
    """While a job runs (plain or generator) `devices.background_jobs` counts it, so the live worker keeps its
    stage one at its own priority; once every job ended the count is back to none."""
    from deepvis_app.devices import background_jobs

    jobs = Jobs()
    seen, done = [], []

    def plain(_abort):
        seen.append(background_jobs())
        return "plain"

    def gen(_abort):
        seen.append(background_jobs())
        yield 1
        seen.append(background_jobs())
        return "gen"

    before = background_jobs()
    jobs.start("a", plain, on_done=done.append)
    jobs.start("b", gen, on_done=done.append)
    qtbot.waitUntil(lambda: sorted(done) == ["gen", "plain"], timeout=5000)
    assert len(seen) == 3 and all(n >= before + 1 for n in seen)
    qtbot.waitUntil(lambda: background_jobs() == before, timeout=5000)
