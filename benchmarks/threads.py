"""Torch thread count x OpenMP wait policy, on a quiet CPU and next to CPU hogs; prints JSON.

Issue 17: with torch's default threads the live view fell to 0-6 fps while other programs were busy, and a
32-step optimize took 29.3 s instead of 2.1 s: OpenMP teams that spin-wait collapse on an oversubscribed CPU.
Each policy is measured in a child process (OMP_* / GOMP_* must be set before torch loads) running
(a) the headless live pipeline on the demo source, as benchmarks/pipeline.py does, and
(b) a short `optimize` (channel objective, --steps, --size), once quiet and once with one busy-loop
process per core, started and killed here. Children get DEEPVIS_WAIT_POLICY unset so the package's own
defaults do not mask the policy under test.
Usage: python benchmarks/threads.py [--frames N] [--steps S] [--size P] [--policies a,b,...]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

CORES = os.cpu_count() or 1
# name -> (torch threads, extra env); None threads = torch's default (one per core)
POLICIES: dict[str, tuple[int | None, dict[str, str]]] = {
    "default": (None, {}),
    "cores_passive": (CORES, {"OMP_WAIT_POLICY": "PASSIVE"}),
    "cores_spin1k": (CORES, {"GOMP_SPINCOUNT": "1000"}),
    "cores_spin10k": (CORES, {"GOMP_SPINCOUNT": "10000"}),
    "cores_spin100k": (CORES, {"GOMP_SPINCOUNT": "100000"}),
    "one": (1, {}),
    "one_passive": (1, {"OMP_WAIT_POLICY": "PASSIVE"}),
}
if CORES > 2:
    POLICIES["cores-1_passive"] = (CORES - 1, {"OMP_WAIT_POLICY": "PASSIVE"})

CHILD = r"""
import json, sys, time
import torch
threads, frames, steps, size = (int(a) for a in sys.argv[1:5])
if threads:
    torch.set_num_threads(threads)
from deepvis_app import load_model
from deepvis_app.devices import keep_freed_memory
malloc = keep_freed_memory()  # as `deepvis` runs
from deepvis_app.optimize import optimize
from deepvis_app.optimize import objectives as O
from deepvis_app.pipeline import ViewRequest, run_headless
from deepvis_app.sources import DemoSource
model = load_model("efficientnet_lite0", device="cpu")
src = DemoSource(); src.open()
rep = run_headless(model, src, frames=frames, request=ViewRequest(layer=model.default_layer), fps=120.0, warmup=3,
                   timeout=120.0)
t0 = time.perf_counter()
optimize(model, O.channel(model.default_layer, 0), steps=steps, size=size, seed=0, use_cache=False)
opt_s = time.perf_counter() - t0
print(json.dumps({"malloc": malloc, "torch_threads": torch.get_num_threads(),
                  "pipeline_fps": round(rep.pipeline_fps, 2),
                  "latency_ms_p95": round(rep.latency_ms_p95, 1), "optimize_s": round(opt_s, 2),
                  "timed_out": rep.timed_out}))
"""


def measure(threads: int | None, extra: dict[str, str], busy: bool, args: argparse.Namespace) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMP_", "GOMP_", "MKL_"))}
    env.update(extra, DEEPVIS_WAIT_POLICY="")
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(CORES if busy else 0)]
    try:
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", CHILD, str(threads or 0), str(args.frames), str(args.steps),
                              str(args.size)], env=env, capture_output=True, text=True, timeout=args.child_timeout)
        wall = time.perf_counter() - t0
    except subprocess.TimeoutExpired:
        return {"error": f"child passed {args.child_timeout} s"}
    finally:
        for h in hogs:
            h.kill()
            h.wait()
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else f"rc {out.returncode}"}
    return {**json.loads(out.stdout.strip().splitlines()[-1]), "child_wall_s": round(wall, 1)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=30)
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--size", type=int, default=96)
    ap.add_argument("--policies", default=",".join(POLICIES))
    ap.add_argument("--child-timeout", type=float, default=100.0)
    args = ap.parse_args()
    rows = []
    for name in args.policies.split(","):
        threads, extra = POLICIES[name]
        row = {"policy": name, "threads": threads or "default", "env": extra}
        for cond in ("quiet", "busy"):
            row[cond] = measure(threads, extra, cond == "busy", args)
            print(f"{name} {cond}: {row[cond]}", file=sys.stderr, flush=True)
        rows.append(row)
    print(json.dumps({"benchmark": "threads", "cores": CORES, "model": "efficientnet_lite0", "frames": args.frames,
                      "optimize_steps": args.steps, "optimize_size": args.size,
                      "busy": f"{CORES} x `python -c 'while True: pass'`", "load_before": os.getloadavg(),
                      "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
