"""Device selection: `auto` picks CUDA when present, otherwise the CPU."""

from __future__ import annotations

import torch

from .errors import DeepVisError


def resolve_device(spec: str | torch.device | None = "auto") -> torch.device:
    """Turn `auto|cpu|cuda|cuda:N` (or a `torch.device`) into a usable `torch.device`.

    Raises `DeepVisError` for CUDA requests on a machine without CUDA, or an index past the last GPU,
    so the user learns at start-up, not at the first frame.
    """
    if isinstance(spec, torch.device):
        spec = str(spec)
    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        return torch.device("cuda:0") if torch.cuda.is_available() else torch.device("cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "cuda" or spec.startswith("cuda:"):
        index_text = spec.partition(":")[2] or "0"
        if not index_text.isdigit():
            raise DeepVisError(f"bad --device {spec!r}: use auto, cpu, cuda or cuda:N")
        if not torch.cuda.is_available():
            raise DeepVisError(f"--device {spec}: CUDA is not available on this machine (use --device cpu)")
        count = torch.cuda.device_count()
        index = int(index_text)
        if index >= count:
            raise DeepVisError(f"--device {spec}: only {count} CUDA device(s) here (cuda:0..cuda:{count - 1})")
        return torch.device(f"cuda:{index}")
    raise DeepVisError(f"bad --device {spec!r}: use auto, cpu, cuda or cuda:N")


def hand_threads_to_worker() -> int:
    """Keep torch in the calling thread to one intra-op thread; return the count the inference worker should
    set in its own thread (`InferenceWorker(threads=...)`).

    Each thread that runs torch ops gets its own OpenMP team. Once the main thread has a multi-thread team,
    a worker thread's team competes with it: on 2 cores the live forward ran ~1.5x slower than the same
    loop on the main thread. With the GUI/main thread held to one thread, the worker keeps the cores.
    Call it before the main thread runs any torch op (model loading included).
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    return threads


def job_threads() -> int:
    """Intra-op threads for a background job (optimized images, attacks, occlusion, ...) next to the live worker:
    a quarter of the cores, at least one. Each job thread gets its own OpenMP team; on a small machine a second
    full team competes with the worker's and both slow down, so jobs stay small and the live view keeps its pace.
    """
    import os

    return max(1, (os.cpu_count() or 1) // 4)


def thread_policy() -> dict[str, str | int | None]:
    """What the process runs with (for an About box or a benchmark log): torch threads and the OpenMP wait policy
    (`DEEPVIS_WAIT_POLICY=passive` or the user's OMP_WAIT_POLICY; unset = torch's default)."""
    import os

    return {"torch_threads": torch.get_num_threads(), "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY")}
