"""Device selection: `auto` picks CUDA when present, otherwise the CPU."""

from __future__ import annotations

import torch

from .errors import ParamError


def resolve_device(spec: str | torch.device | None = "auto") -> torch.device:
    """Turn `auto|cpu|cuda|cuda:N` (or a `torch.device`) into a usable `torch.device`.

    Raises `ParamError("device", ...)` for an unknown spec, a CUDA request on a machine without CUDA or an index
    past the last GPU, so the user learns at start-up, not at the first frame.
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
            raise ParamError("device", f"{spec!r} is not a device: use auto, cpu, cuda or cuda:N")
        if not torch.cuda.is_available():
            raise ParamError("device", f"{spec}: CUDA is not available on this machine (use cpu)")
        count = torch.cuda.device_count()
        index = int(index_text)
        if index >= count:
            raise ParamError("device", f"{spec}: only {count} CUDA device(s) here (cuda:0..cuda:{count - 1})")
        return torch.device(f"cuda:{index}")
    raise ParamError("device", f"{spec!r} is not a device: use auto, cpu, cuda or cuda:N")


def interactive_threads() -> int:
    """Intra-op threads for single-image work that runs many small ops (the live worker, `deepvis optimize` and
    the other per-image commands): every core but one, at least one; the user's OMP_NUM_THREADS wins.

    Measured on 2 cores (`benchmarks/threads.py`, docs/development.md): one thread ran the headless live pipeline
    as fast as two on a quiet machine (36.6-37.0 vs 28.7-36.0 fps) and 3x faster next to one busy process per
    core (16.0-18.6 vs 5.2-5.7 fps; a 32-step optimize 0.56-0.58 s vs 2.0-4.7 s): batch-1 ops are too small to
    split, and an OpenMP team spanning every core stalls whenever anything else (the GUI thread, another
    program) takes one. Batched work (scan, embeddings, occlusion) keeps every core: 2 threads gave 1.4x there.
    """
    import os

    if os.environ.get("OMP_NUM_THREADS"):
        return torch.get_num_threads()
    return max(1, (os.cpu_count() or 1) - 1)


def hand_threads_to_worker() -> int:
    """Keep torch in the calling thread to one intra-op thread; return the count the inference worker should
    set in its own thread (`InferenceWorker(threads=...)`): `interactive_threads()`.

    Each thread that runs torch ops gets its own OpenMP team. Once the main thread has a multi-thread team,
    a worker thread's team competes with it: on 2 cores the live forward ran ~1.5x slower than the same
    loop on the main thread. With the GUI/main thread held to one thread, the worker has its cores (all but
    the one left for the GUI thread).
    Call it before the main thread runs any torch op (model loading included).
    """
    threads = interactive_threads()
    torch.set_num_threads(1)
    return threads


def job_threads() -> int:
    """Intra-op threads for a background job (optimized images, attacks, occlusion, ...) next to the live worker:
    a quarter of the cores, at least one. Each job thread gets its own OpenMP team; on a small machine a second
    full team competes with the worker's and both slow down, so jobs stay small and the live view keeps its pace.
    """
    import os

    return max(1, (os.cpu_count() or 1) // 4)


_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # glibc <malloc.h>
_KEEP_BYTES = 1 << 30
_malloc_policy = "system"


def keep_freed_memory() -> str:
    """Have glibc's malloc reuse freed memory instead of handing it back to the kernel and faulting it in again.

    By default glibc serves every block over 32 MiB (and, at first, over 128 KiB) with a fresh mmap and unmaps
    it on free, so each new activation-sized tensor is page-faulted in, zero-filled by the kernel, before a
    kernel writes it: on this 2-core CPU an elementwise op on a 38 MB tensor took 11.6 ms instead of 2.8 ms,
    and a batch-8 guided+deconv backward 0.84-1.06 s instead of 0.53-0.66 s. So the app and the CLI (not the
    library on import) turn mmap off for big blocks (they come from the heap and are reused) and keep up to
    1 GiB of free heap before trimming. `DEEPVIS_MALLOC=system` keeps glibc's defaults. Returns the policy in
    effect: "keep" or "system" (also on platforms without glibc).
    """
    global _malloc_policy
    import os
    import sys

    if os.environ.get("DEEPVIS_MALLOC", "").lower() == "system" or not sys.platform.startswith("linux"):
        return _malloc_policy
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        if libc.mallopt(_M_MMAP_MAX, 0) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, _KEEP_BYTES) == 1:
            _malloc_policy = "keep"
    except (OSError, AttributeError):  # musl or another libc: nothing to tune
        pass
    return _malloc_policy


def thread_policy() -> dict[str, str | int | None]:
    """What the process runs with (for an About box or a benchmark log): torch threads, the OpenMP wait policy
    (`DEEPVIS_WAIT_POLICY=passive` or the user's OMP_WAIT_POLICY; unset = torch's default) and the malloc
    policy (`keep_freed_memory`)."""
    import os

    return {"torch_threads": torch.get_num_threads(), "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
            "malloc": _malloc_policy}
