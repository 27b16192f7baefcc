"""Devices: which one (`resolve_device`), how each thread uses it (streams, the current CUDA device, cuDNN
autotuning), one precision policy for exactness checks, and what to do when memory runs out.

`auto` picks CUDA when present, otherwise the CPU; `mps` (Apple silicon) only when asked for. On a GPU the live
worker runs on its own high-priority stream and background jobs on low-priority ones (`live_stream`,
`job_stream`): nothing in the live path waits for the whole device, each thread waits only for its own work.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch

from .errors import DeepVisError, ParamError

DEVICES = "auto, cpu, cuda or cuda:N (or mps on Apple silicon)"
MPS_FALLBACK = "PYTORCH_ENABLE_MPS_FALLBACK"


def mps_available() -> bool:
    """Apple's Metal backend is built in and usable here."""
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def mps_fallback_note() -> str:
    """One line on what happens to operations Metal does not implement. torch reads PYTORCH_ENABLE_MPS_FALLBACK
    once, when it loads, so the line says how to start the program rather than changing the setting."""
    if os.environ.get(MPS_FALLBACK, "0").strip() not in ("", "0"):
        return f"mps: operations Metal lacks run on the CPU instead ({MPS_FALLBACK}=1), slower but complete"
    return (f"mps: an operation Metal lacks stops with an error; start with {MPS_FALLBACK}=1 to run such "
            "operations on the CPU")


def resolve_device(spec: str | torch.device | None = "auto", *,
                   on_notice: Callable[[str], None] | None = None) -> torch.device:
    """Turn `auto|cpu|cuda|cuda:N|mps` (or a `torch.device`) into a usable `torch.device`.

    Raises `ParamError("device", ...)` for an unknown spec, a CUDA or MPS request on a machine without it or an
    index past the last GPU, so the user learns at start-up, not at the first frame. `on_notice` hears one line
    for `mps`: what happens to operations Metal lacks (`mps_fallback_note`).
    """
    if isinstance(spec, torch.device):
        spec = str(spec)
    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        return torch.device("cuda:0") if torch.cuda.is_available() else torch.device("cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec in ("mps", "mps:0"):
        if not mps_available():
            raise ParamError("device", f"{spec}: Apple's Metal (MPS) is not available on this machine (use cpu)")
        if on_notice is not None:
            on_notice(mps_fallback_note())
        return torch.device("mps")
    if spec == "cuda" or spec.startswith("cuda:"):
        index_text = spec.partition(":")[2] or "0"
        if not index_text.isdigit():
            raise ParamError("device", f"{spec!r} is not a device: use {DEVICES}")
        if not torch.cuda.is_available():
            raise ParamError("device", f"{spec}: CUDA is not available on this machine (use cpu)")
        count = torch.cuda.device_count()
        index = int(index_text)
        if index >= count:
            raise ParamError("device", f"{spec}: only {count} CUDA device(s) here (cuda:0..cuda:{count - 1})")
        return torch.device(f"cuda:{index}")
    raise ParamError("device", f"{spec!r} is not a device: use {DEVICES}")


# ---------------------------------------------------------------- threads on a GPU: current device, streams

def use_device(device: torch.device) -> None:
    """Make `device` the calling thread's current CUDA device (a no-op elsewhere). Each thread has its own, and
    it starts as cuda:0: without this, pinning host memory, an event or a stream made without a device opens a
    context (hundreds of MB) on cuda:0 for a program told to use cuda:1."""
    if device.type == "cuda":
        torch.cuda.set_device(device)


def prepare_live(device: torch.device) -> None:
    """Set up the calling thread for the live loop: its current device, and cuDNN autotuning (the live path runs
    one input shape every frame, so the fastest algorithm is measured once and reused)."""
    use_device(device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True


LIVE_PRIORITY, JOB_PRIORITY = -1, 0  # CUDA: a lower number runs first; 0 is the default (lowest) priority

_STREAMS_LOCK = threading.Lock()
_LIVE_STREAMS: dict[int, torch.cuda.Stream] = {}
_JOB_STREAMS: dict[tuple[int, int], torch.cuda.Stream] = {}  # (device index, thread id) -> stream


def _index(device: torch.device) -> int:
    return device.index if device.index is not None else torch.cuda.current_device()


def _live_for(device: torch.device) -> torch.cuda.Stream:
    with _STREAMS_LOCK:
        index = _index(device)
        s = _LIVE_STREAMS.get(index)
        if s is None:
            s = _LIVE_STREAMS[index] = torch.cuda.Stream(device=index, priority=LIVE_PRIORITY)
        return s


def _job_for(device: torch.device) -> torch.cuda.Stream:
    with _STREAMS_LOCK:
        key = (_index(device), threading.get_ident())
        s = _JOB_STREAMS.get(key)
        if s is None:
            if len(_JOB_STREAMS) > 64:  # every job runs on a new thread: forget the threads that ended
                alive = {t.ident for t in threading.enumerate()}
                for old in [k for k in _JOB_STREAMS if k[1] not in alive]:
                    del _JOB_STREAMS[old]
            s = _JOB_STREAMS[key] = torch.cuda.Stream(device=key[0], priority=JOB_PRIORITY)
        return s


@contextmanager
def live_stream(device: torch.device) -> Iterator[torch.cuda.Stream | None]:
    """Run the body on the device's high-priority live stream (CUDA; elsewhere nothing changes). Streams are
    per thread in torch: enter it in the live worker's thread, around its loop."""
    if device.type != "cuda":
        yield None
        return
    prepare_live(device)
    stream = _live_for(device)
    with torch.cuda.stream(stream):
        yield stream


@contextmanager
def job_stream(device: torch.device | None = None) -> Iterator[torch.cuda.Stream | None]:
    """Run a background job's body on a low-priority stream of its own (one per thread and device), so the live
    worker's kernels go first and neither waits for the other's. `device`: the job's model's device (None: the
    thread's current CUDA device when CUDA is in use); a no-op on the CPU and MPS."""
    if device is None:
        if not (torch.cuda.is_available() and torch.cuda.is_initialized()):
            yield None
            return
        device = torch.device("cuda", torch.cuda.current_device())
    if device.type != "cuda":
        yield None
        return
    use_device(device)
    stream = _job_for(device)
    with torch.cuda.stream(stream):
        yield stream


def wait_for_other_streams(device: torch.device) -> None:
    """Make the calling thread's current stream wait (on the GPU, the host does not block) for the work already
    queued on the default stream and every job stream of `device`: what a new model's weights were loaded with.
    For a model switch, not per frame."""
    if device.type != "cuda":
        return
    here = torch.cuda.current_stream(device)
    with _STREAMS_LOCK:
        others = [s for (i, _t), s in _JOB_STREAMS.items() if i == _index(device)]
    unique = {s.cuda_stream: s for s in [torch.cuda.default_stream(device), *others]}  # torch reuses a pool
    for other in unique.values():
        if other != here:
            here.wait_stream(other)


# ---------------------------------------------------------------- precision

_EXACT_LOCK = threading.Lock()
_exact_depth = 0
_saved_tf32: tuple[bool, bool] | None = None


def tf32_enabled() -> bool:
    """Whether float32 convolutions or matrix products may run in TF32 (10-bit mantissa) on a CUDA GPU."""
    return bool(torch.backends.cudnn.allow_tf32 or torch.backends.cuda.matmul.allow_tf32)


@contextmanager
def exact_math(device: torch.device | None = None) -> Iterator[None]:
    """Full float32 on a CUDA GPU while inside: TF32 off for convolutions and matrix products, for the checks
    that compare a fast path with the plain forward (TF32 rounding would make equal computations differ by
    ~1e-3 and reject every fast path). The flags are process-wide: nested and concurrent users are counted and
    the flags in force before the first one come back when the last one leaves. A no-op on the CPU."""
    global _exact_depth, _saved_tf32
    if device is not None and device.type != "cuda":
        yield
        return
    with _EXACT_LOCK:
        if _exact_depth == 0:
            _saved_tf32 = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
            torch.backends.cudnn.allow_tf32 = False
            torch.backends.cuda.matmul.allow_tf32 = False
        _exact_depth += 1
    try:
        yield
    finally:
        with _EXACT_LOCK:
            _exact_depth -= 1
            if _exact_depth == 0 and _saved_tf32 is not None:
                torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = _saved_tf32
                _saved_tf32 = None


def check_tolerance(device: torch.device) -> tuple[float, float]:
    """(rtol, atol) for a fast path to count as equal to the plain forward on `device`: the CPU's kernels agree
    to ~1e-6; a GPU's algorithms (Winograd, FFT, split reductions) differ more, and TF32 (if on: use
    `exact_math` for the check) far more. Too tight a tolerance would silently throw the fast paths away."""
    if device.type == "cpu":
        return 1e-4, 1e-5
    if device.type == "cuda" and tf32_enabled():
        return 1e-2, 1e-3
    return 1e-3, 1e-4


# ---------------------------------------------------------------- running out of memory

_OOM_TEXTS = ("out of memory", "can't allocate memory", "not enough memory")


def is_out_of_memory(err: BaseException) -> bool:
    """A GPU (torch.OutOfMemoryError, MPS's RuntimeError) or host (MemoryError, the CPU allocator's RuntimeError)
    allocation failure: worth retrying with less."""
    if isinstance(err, torch.OutOfMemoryError | MemoryError):
        return True
    return isinstance(err, RuntimeError) and any(t in str(err).lower() for t in _OOM_TEXTS)


def halve_batch(err: BaseException, batch: int, *, device: torch.device | str, what: str,
                on_notice: Callable[[str], None] | None = None) -> int:
    """Call in the `except` of an out-of-memory `err` while running `batch` items (`what`, plural: "window
    positions") at once: returns the batch to retry with (half), after freeing what the failed attempt held and
    telling the user in one line. Raises DeepVisError when even one item did not fit."""
    if err.__traceback__ is not None:
        traceback.clear_frames(err.__traceback__)  # the failed attempt's tensors, held by its finished frames
    if isinstance(device, torch.device) and device.type == "cuda":
        torch.cuda.empty_cache()  # give the freed blocks back: the live worker allocates on another stream
    if batch <= 1:
        raise DeepVisError(f"out of memory on {device} even with one of the {what} at a time; close other "
                           "programs or use a smaller model") from err
    smaller = max(1, batch // 2)
    if on_notice is not None:
        on_notice(f"out of memory on {device} with {batch} {what} at once: continuing with {smaller}")
    return smaller


def interactive_threads() -> int:
    """Intra-op threads for single-image work that runs many small ops (the live worker, `deepvis optimize` and
    the other per-image commands): every core but one, at least one; the user's OMP_NUM_THREADS wins.

    Measured on 2 cores (`benchmarks/threads.py`, docs/development.md): one thread ran the headless live pipeline
    as fast as two on a quiet machine (36.6-37.0 vs 28.7-36.0 fps) and 3x faster next to one busy process per
    core (16.0-18.6 vs 5.2-5.7 fps; a 32-step optimize 0.56-0.58 s vs 2.0-4.7 s): batch-1 ops are too small to
    split, and an OpenMP team spanning every core stalls whenever anything else (the GUI thread, another
    program) takes one. Batched work (scan, embeddings, occlusion) keeps every core: 2 threads gave 1.4x there.
    """
    if os.environ.get("OMP_NUM_THREADS"):
        return torch.get_num_threads()
    return max(1, (os.cpu_count() or 1) - 1)


GIL_SWITCH_S = 0.001


def hand_threads_to_worker() -> int:
    """Keep torch in the calling thread to one intra-op thread; return the count the inference worker should
    set in its own thread (`InferenceWorker(threads=...)`): `interactive_threads()`.

    Each thread that runs torch ops gets its own OpenMP team. Once the main thread has a multi-thread team,
    a worker thread's team competes with it: on 2 cores the live forward ran ~1.5x slower than the same
    loop on the main thread. With the GUI/main thread held to one thread, the worker has its cores (all but
    the one left for the GUI thread).
    Call it before the main thread runs any torch op (model loading included).

    Also shortens the interpreter's switch interval to `GIL_SWITCH_S`: an eager forward takes the GIL back after
    every op, and whenever the GUI thread held it the worker waited up to Python's default 5 ms for it (the
    window's painted rate over the headless pipeline's with guided backprop, `benchmarks/gui_paint.py` on 2 cores:
    0.76-0.89x at 5 ms, 0.92-0.97x at 1 ms; docs/development.md).
    """
    threads = interactive_threads()
    torch.set_num_threads(1)
    sys.setswitchinterval(GIL_SWITCH_S)
    return threads


def host_reads_free(t: torch.Tensor) -> bool:
    """Whether reading `t` on the host (a bool, an int, `nonzero`) costs nothing: on the CPU. On a GPU each read
    waits for the device, so the live paths keep their decisions there and read back once per frame
    (`render.to_host`); on the CPU they may read and skip work (the grid's sign, the view scale's top-k, a
    gradient's nonzero box). The one switch: tests turn it off to run the device paths on the CPU."""
    return t.device.type == "cpu"


_CPU_SAMPLE: dict[str, float] = {}
_CPU_LOCK = threading.Lock()


def cores_to_spare(*, every: float = 1.0) -> bool:
    """Whether other programs leave this process the machine's cores: the CPU time the rest of the system used
    since the last look (all cores' busy time from /proc/stat minus this process's own) stays under half a core.
    Looked at most once per `every` seconds; False where it cannot be told (no /proc/stat), so the measured
    one-thread default holds there."""
    now = time.monotonic()
    with _CPU_LOCK:
        if _CPU_SAMPLE and now - _CPU_SAMPLE["t"] < every:
            return bool(_CPU_SAMPLE["spare"])
        try:
            with open("/proc/stat") as f:
                fields = [int(v) for v in f.readline().split()[1:9]]
        except (OSError, ValueError):
            return False
        busy = (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")  # minus idle and iowait
        mine = sum(os.times()[:2])
        spare = False
        if _CPU_SAMPLE:
            wall = now - _CPU_SAMPLE["t"]
            others = (busy - _CPU_SAMPLE["busy"] - (mine - _CPU_SAMPLE["mine"])) / max(wall, 1e-3)
            spare = others < 0.5
        _CPU_SAMPLE.update(t=now, busy=busy, mine=mine, spare=float(spare))
        return spare


_SOLO = threading.local()


@contextmanager
def solo_threads() -> Iterator[None]:
    """Inside, this thread's `batch_threads` stretches keep its own thread count: a thread that shares the cores
    with another stage of the same pipeline (`pipeline.worker`) must not grow an OpenMP team over them."""
    before = getattr(_SOLO, "on", False)
    _SOLO.on = True
    try:
        yield
    finally:
        _SOLO.on = before


@contextmanager
def batch_threads(device: torch.device) -> Iterator[None]:
    """Every core for a batched stretch inside single-image work -- the stacked backprop views (`attribution.
    stacked`: three images' worth of transposed convolutions in one call per layer) -- then back to the thread's
    own count. `interactive_threads` leaves batch-1 ops a core short because they are too small to split, but
    batched work gains from every core (1.4x on 2, docs/development.md) -- while no other program wants them: an
    OpenMP team spanning a core another process takes stalls (ResNet-18's three views next to one busy process per
    core: 147 ms on one thread, 623 ms on two), so it waits for `cores_to_spare`. A no-op on a GPU, where the user
    set OMP_NUM_THREADS, and where the thread already has them all."""
    have = torch.get_num_threads()
    want = os.cpu_count() or 1
    if device.type != "cpu" or os.environ.get("OMP_NUM_THREADS") or have >= want or getattr(_SOLO, "on", False) \
            or not cores_to_spare():
        yield
        return
    torch.set_num_threads(want)
    try:
        yield
    finally:
        torch.set_num_threads(have)


_JOBS = {"running": 0}
_JOBS_LOCK = threading.Lock()


@contextmanager
def background_job() -> Iterator[None]:
    """Marks a background job (an optimized image, occlusion, an attack, ...) running on the calling thread, so
    the live worker knows the cores are not all its own (`background_jobs`)."""
    with _JOBS_LOCK:
        _JOBS["running"] += 1
    try:
        yield
    finally:
        with _JOBS_LOCK:
            _JOBS["running"] -= 1


def background_jobs() -> int:
    """How many background jobs run now (`background_job`)."""
    return _JOBS["running"]


def job_threads() -> int:
    """Intra-op threads for a background job (optimized images, attacks, occlusion, ...) next to the live worker:
    a quarter of the cores, at least one. Each job thread gets its own OpenMP team; on a small machine a second
    full team competes with the worker's and both slow down, so jobs stay small and the live view keeps its pace.
    """
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


def release_freed_memory() -> bool:
    """Hand the free pages of every malloc arena back to the kernel (glibc's `malloc_trim(0)`), where
    `keep_freed_memory` keeps them. Kept memory is reused for same-sized blocks, but a long session allocates
    blocks of many sizes from several threads (the worker's frames, occlusion batches, saliency, jobs), and the
    free memory the arenas keep then grows without bound (the window with guided backprop and "Where it looks"
    live: in use flat at ~0.5 GB, free 0.86 -> 1.34 GB in 9 minutes, RSS rising with it). The live worker calls
    this through `heap.KeptMemory` once the kept memory outgrows a bound (every TRIM_EVERY_S seconds where glibc
    cannot say how much it keeps): the next frame faults its pages in once again. False where there is nothing
    to trim (the system policy, another libc)."""
    if _malloc_policy != "keep":
        return False
    try:
        import ctypes

        return bool(ctypes.CDLL("libc.so.6").malloc_trim(0))
    except (OSError, AttributeError):
        return False


TRIM_EVERY_S = 30.0


def settle_objects() -> None:
    """Take every object alive now -- the model, the window's widgets, the libraries' modules: ~430k in the window --
    out of the cyclic garbage collector's walks (`gc.freeze`, after one last collection). Its full collections
    walked them all while holding the GIL: under `perf`, 40% of the window's GUI thread was gc_collect_main,
    visit_reachable and visit_decref, and the live worker could run no Python meanwhile. Frozen objects still die
    by reference counting; a reference cycle among them waits for the next call, which thaws everything, collects
    and freezes what is still alive (the old model after a switch). The window calls this once it is built and
    after a model switch."""
    import gc

    gc.unfreeze()
    gc.collect()
    gc.freeze()


def thread_policy() -> dict[str, str | int | None]:
    """What the process runs with (for an About box or a benchmark log): torch threads, the OpenMP wait policy
    (`DEEPVIS_WAIT_POLICY=passive` or the user's OMP_WAIT_POLICY; unset = torch's default) and the malloc
    policy (`keep_freed_memory`)."""
    return {"torch_threads": torch.get_num_threads(), "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
            "malloc": _malloc_policy}
