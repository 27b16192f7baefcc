"""`devices.batch_threads`: every core for the stacked backprop views only while other programs leave them free
(an OpenMP team spanning a core another process takes stalls), the thread's own count back afterwards."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import torch

from deepvis_app import devices


@pytest.fixture
def one_thread_here():
    have = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(have)


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs two cores")
def test_every_core_while_spare_and_restored(one_thread_here, monkeypatch) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(devices, "cores_to_spare", lambda **_: True)
    with devices.batch_threads(torch.device("cpu")):
        assert torch.get_num_threads() == os.cpu_count()
    assert torch.get_num_threads() == 1
    with pytest.raises(RuntimeError), devices.batch_threads(torch.device("cpu")):
        raise RuntimeError("a failing backward")
    assert torch.get_num_threads() == 1  # restored after an exception too


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs two cores")
def test_a_pipeline_stage_keeps_its_own_threads(one_thread_here, monkeypatch) -> None:
    """Inside `solo_threads` (a stage of the two-stage worker) no team grows over the other stage's core; the
    stretch is the thread's own again after it, and other threads never see the flag."""
    import threading

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(devices, "cores_to_spare", lambda **_: True)
    with devices.solo_threads():
        with devices.batch_threads(torch.device("cpu")):
            assert torch.get_num_threads() == 1
        seen = []

        def other() -> None:
            torch.set_num_threads(1)
            with devices.batch_threads(torch.device("cpu")):
                seen.append(torch.get_num_threads())

        t = threading.Thread(target=other)
        t.start()
        t.join()
        assert seen == [os.cpu_count()]
    with devices.batch_threads(torch.device("cpu")):
        assert torch.get_num_threads() == os.cpu_count()


def test_one_thread_when_busy_on_a_gpu_or_set_by_the_user(one_thread_here, monkeypatch) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(devices, "cores_to_spare", lambda **_: False)
    with devices.batch_threads(torch.device("cpu")):
        assert torch.get_num_threads() == 1
    monkeypatch.setattr(devices, "cores_to_spare", lambda **_: True)
    with devices.batch_threads(torch.device("cuda")):
        assert torch.get_num_threads() == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    with devices.batch_threads(torch.device("cpu")):
        assert torch.get_num_threads() == 1


@pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="reads /proc/stat")
def test_a_busy_program_beside_us_leaves_no_core_to_spare() -> None:
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        devices.cores_to_spare(every=0.0)  # a first look
        time.sleep(0.6)
        assert devices.cores_to_spare(every=0.0) is False  # the hog used about a core meanwhile
    finally:
        hog.kill()
        hog.wait()


def test_settled_objects_leave_the_gc_walks_and_dead_cycles_go_at_the_next_settle() -> None:
    """`settle_objects` freezes what is alive (gen-2 collections no longer walk it); a cycle that dies later (the old
    model after a switch) is collected by the next call, not kept forever."""
    import gc
    import weakref

    class Node:
        pass

    a, b = Node(), Node()
    a.other, b.other = b, a  # a reference cycle: only the cyclic collector frees it
    gone = weakref.ref(a)
    try:
        devices.settle_objects()
        assert gc.get_freeze_count() > 1000
        del a, b
        gc.collect()
        assert gone() is not None  # frozen: the walks skip it
        devices.settle_objects()
        assert gone() is None  # thawed, collected
    finally:
        gc.unfreeze()


def test_the_window_hands_the_worker_its_threads_and_the_gil_sooner(one_thread_here, monkeypatch) -> None:
    """`hand_threads_to_worker` (the window, before the model loads): one torch thread on the GUI thread, the
    interactive count for the worker, and a 1 ms GIL switch interval so the worker's eager ops do not wait Python's
    default 5 ms behind the painting GUI thread."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    torch.set_num_threads(2)
    interval = sys.getswitchinterval()
    sys.setswitchinterval(0.005)  # Python's default (a GUI test in this process may have set the window's)
    try:
        assert devices.hand_threads_to_worker() == devices.interactive_threads()
        assert torch.get_num_threads() == 1
        assert sys.getswitchinterval() == pytest.approx(devices.GIL_SWITCH_S) and devices.GIL_SWITCH_S < 0.005
    finally:
        sys.setswitchinterval(interval)
