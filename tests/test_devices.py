import sys

import pytest
import torch

from deepvis_app import DeepVisError
from deepvis_app.devices import resolve_device
from deepvis_app.errors import ParamError


def test_auto_and_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("CPU") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("auto") == torch.device("cuda:0")
    assert resolve_device("cuda:1") == torch.device("cuda:1")
    assert resolve_device("cuda") == torch.device("cuda:0")
    with pytest.raises(DeepVisError, match="only 2 CUDA"):
        resolve_device("cuda:2")


def test_cuda_without_gpu_and_nonsense(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(DeepVisError, match="CUDA is not available"):
        resolve_device("cuda")
    for bad in ("gpu", "cuda:x", "tpu"):
        with pytest.raises(ParamError, match=f"device '{bad}' is not a device: use auto, cpu, cuda or cuda:N") as err:
            resolve_device(bad)
        assert err.value.param == "device"  # the core names its parameter; the CLI names the flag:
        assert err.value.flag_message() == (f"--device '{bad}' is not a device: use auto, cpu, cuda or cuda:N "
                                            "(or mps on Apple silicon)")


def test_mps_is_resolved_and_says_what_happens_to_missing_ops(monkeypatch):
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(ParamError, match="mps: Apple's Metal \\(MPS\\) is not available on this machine") as err:
        resolve_device("mps")
    assert err.value.param == "device"
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    heard: list[str] = []
    monkeypatch.delenv("PYTORCH_ENABLE_MPS_FALLBACK", raising=False)
    assert resolve_device("MPS", on_notice=heard.append) == torch.device("mps")
    assert heard == ["mps: an operation Metal lacks stops with an error; start with PYTORCH_ENABLE_MPS_FALLBACK=1 "
                     "to run such operations on the CPU"]
    monkeypatch.setenv("PYTORCH_ENABLE_MPS_FALLBACK", "1")
    assert resolve_device("mps", on_notice=heard.append) == torch.device("mps")
    assert heard[-1] == ("mps: operations Metal lacks run on the CPU instead (PYTORCH_ENABLE_MPS_FALLBACK=1), "
                         "slower but complete")
    assert len(heard) == 2 and resolve_device("mps") == torch.device("mps")  # no callback: nothing said
    assert resolve_device("auto") == torch.device("cpu")  # auto never picks mps: it is asked for by name


# The thread policy (issue 17) must reach OpenMP before torch loads, so it is checked in fresh interpreters.
_PROBE = r"""
import importlib.abc, json, os, sys
seen = {}
class Spy(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "torch" and "policy" not in seen:
            seen["policy"] = os.environ.get("OMP_WAIT_POLICY")
        return None
sys.meta_path.insert(0, Spy())
import deepvis_app
import torch
print(json.dumps({"at_torch_import": seen.get("policy"), "env": os.environ.get("OMP_WAIT_POLICY"),
                  "threads": torch.get_num_threads()}))
"""


def _probe(**env: str) -> dict:
    import json
    import os
    import subprocess
    import sys

    base = {k: v for k, v in os.environ.items()
            if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "DEEPVIS_WAIT_POLICY")}
    out = subprocess.run([sys.executable, "-c", _PROBE], env={**base, **env}, capture_output=True, text=True,
                         check=True, timeout=120)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_wait_policy_opt_in_is_set_before_torch_loads():
    assert _probe()["at_torch_import"] is None  # the default: torch's own policy (fastest on a quiet machine)
    got = _probe(DEEPVIS_WAIT_POLICY="passive")
    assert got["at_torch_import"] == "PASSIVE"  # set by `import deepvis_app`, before torch's OpenMP reads it
    assert got["env"] == "PASSIVE"


def test_user_choices_win():
    assert _probe(OMP_WAIT_POLICY="ACTIVE", DEEPVIS_WAIT_POLICY="passive")["at_torch_import"] == "ACTIVE"
    assert _probe(OMP_NUM_THREADS="1")["threads"] == 1


_FAULTS = """
import json, resource, sys
import torch
from deepvis_app.devices import keep_freed_memory, thread_policy
if sys.argv[1] == "cli":
    from deepvis_app.cli import main
    main(["layers", "--model", "efficientnet_lite0", "--weights", "random", "--json"])  # the CLI applies the policy
policy = thread_policy()["malloc"]
faults = []
for _ in range(4):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    t = torch.empty(16 << 20)  # 64 MiB, over glibc's largest mmap threshold
    t.fill_(1.0)  # touch every page
    del t
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"policy": policy, "faults": faults}))
"""


def _faults(mode: str, **env: str) -> dict:
    import json
    import os
    import subprocess
    import sys

    base = {k: v for k, v in os.environ.items() if k != "DEEPVIS_MALLOC"}
    out = subprocess.run([sys.executable, "-c", _FAULTS, mode], env={**base, **env}, capture_output=True, text=True,
                         check=True, timeout=180)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc policy")
def test_the_program_reuses_freed_memory_instead_of_faulting_it_in_again():
    pages = (64 << 20) // 4096
    kept = _faults("cli")
    assert kept["policy"] == "keep"
    assert kept["faults"][0] > pages // 2  # the first big tensor is faulted in once...
    assert min(kept["faults"][1:]) < pages // 20  # ...and its memory is reused, not unmapped and faulted again
    plain = _faults("cli", DEEPVIS_MALLOC="system")  # opt-out: glibc's defaults
    assert plain["policy"] == "system"
    assert min(plain["faults"]) > pages // 2
    assert _faults("library")["policy"] == "system"  # importing the library changes nothing


def test_interactive_threads_leave_a_core_and_respect_the_user(monkeypatch):
    import os

    from deepvis_app.devices import interactive_threads

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    for cores, want in ((8, 7), (2, 1), (1, 1), (None, 1)):
        monkeypatch.setattr(os, "cpu_count", lambda c=cores: c)
        assert interactive_threads() == want
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert interactive_threads() == torch.get_num_threads()  # the user's choice, as torch read it


def test_cli_gives_per_image_commands_the_interactive_threads_and_batch_commands_every_core(monkeypatch, tmp_path,
                                                                                            capsys):
    import os

    from deepvis_app import cli

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    calls: list[int] = []
    monkeypatch.setattr(torch, "set_num_threads", calls.append)
    assert cli.main(["layers", "--model", "efficientnet_lite0", "--weights", "random", "--json"]) == 0
    assert calls == [3]
    calls.clear()
    assert cli.main(["scan", str(tmp_path / "missing"), "--out", str(tmp_path / "store")]) == 2  # bad folder
    assert calls == []
    capsys.readouterr()


def test_each_thread_is_put_on_the_chosen_gpu_and_the_live_thread_autotunes(monkeypatch):
    """`--device cuda:1` must not open a context on cuda:0: every thread that works on the GPU sets its own current
    device (torch keeps one per thread); the live thread also turns cuDNN autotuning on (one shape per frame)."""
    from deepvis_app.devices import job_stream, live_stream, prepare_live, use_device

    chosen: list[torch.device] = []
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    use_device(torch.device("cpu"))
    prepare_live(torch.device("cpu"))
    assert chosen == [] and torch.backends.cudnn.benchmark is False  # the CPU: nothing to do
    prepare_live(torch.device("cuda:1"))
    assert chosen == [torch.device("cuda:1")] and torch.backends.cudnn.benchmark is True
    with live_stream(torch.device("cpu")) as live, job_stream(torch.device("cpu")) as job:
        assert live is None and job is None  # no streams off a GPU
    with job_stream() as job:  # CUDA not in use: nothing
        assert job is None


def test_exact_math_turns_tf32_off_while_any_user_is_inside_and_restores_it():
    import threading

    from deepvis_app.devices import check_tolerance, exact_math, tf32_enabled

    cudnn, matmul = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = True, True
        cuda = torch.device("cuda:0")
        assert check_tolerance(cuda) == (1e-2, 1e-3)  # TF32 on: ~1e-3 relative rounding per op
        with exact_math(torch.device("cpu")):
            assert tf32_enabled()  # the CPU: flags untouched
        inside, leave = threading.Event(), threading.Event()

        def other() -> None:
            with exact_math(cuda):
                inside.set()
                leave.wait(10)

        t = threading.Thread(target=other)
        with exact_math(cuda):
            assert not tf32_enabled() and check_tolerance(cuda) == (1e-3, 1e-4)
            t.start()
            assert inside.wait(10)
        assert not tf32_enabled()  # the other thread is still inside: still exact
        leave.set()
        t.join(10)
        assert torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32  # both restored
        assert check_tolerance(torch.device("cpu")) == (1e-4, 1e-5)
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = cudnn, matmul


def test_out_of_memory_is_recognised_and_halves_the_batch_once_said():
    from deepvis_app.devices import halve_batch, is_out_of_memory

    cpu_oom = RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory: you "
                           "tried to allocate 1125899906842624 bytes")
    for err in (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), MemoryError(), cpu_oom,
                RuntimeError("MPS backend out of memory (MPS allocated: 8 GB)")):
        assert is_out_of_memory(err)
    for err in (RuntimeError("shape mismatch"), ValueError("out of memory"), KeyError("x")):
        assert not is_out_of_memory(err)
    heard: list[str] = []
    assert halve_batch(MemoryError(), 32, device=torch.device("cpu"), what="images", on_notice=heard.append) == 16
    assert halve_batch(MemoryError(), 3, device="cpu", what="images") == 1
    assert heard == ["out of memory on cpu with 32 images at once: continuing with 16"]
    with pytest.raises(DeepVisError, match="out of memory on cpu even with one of the images at a time"):
        halve_batch(MemoryError(), 1, device="cpu", what="images", on_notice=heard.append)
    assert len(heard) == 1
