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
        assert err.value.flag_message() == f"--device '{bad}' is not a device: use auto, cpu, cuda or cuda:N"


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
