"""Timing and peak-memory measurement shared by the benchmark cases."""

import gc
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

CASES_SCRIPT = Path(__file__).with_name("cases.py")


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved_medians(fns, inputs, rounds, warmup=1, device=None):
    """Median wall time of each fn(inputs) over `rounds` rounds after `warmup` untimed ones. Every
    round runs every implementation once, so a change in machine load (other processes) hits all
    of them alike and the ratios stay meaningful."""
    device = device or inputs["hidden"].device
    times = {name: [] for name in fns}
    for i in range(warmup + rounds):
        for name, fn in fns.items():
            gc.collect()
            _sync(device)
            start = time.perf_counter()
            fn(inputs)
            _sync(device)
            if i >= warmup:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def peak_extra_bytes(case, impl, shape, dtype, device, fn=None, inputs=None, script=CASES_SCRIPT):
    """Peak memory one run adds on top of its inputs.

    CUDA: torch's allocator statistics, in this process. CPU: torch keeps no CPU allocator
    statistics, so a fresh process runs the implementation and reports its resident-set high-water
    mark (/proc VmHWM, reset between a warm-up run and the measured one); glibc is told to return
    every freed block over 64 KiB to the OS so the figure tracks live memory.
    """
    if device.type == "cuda":
        fn(inputs)
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn(inputs)
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    return peak_extra_bytes_each(case, [impl], shape, dtype, device, script=script)[impl]


def peak_extra_bytes_each(case, names, shape, dtype, device, fns=None, inputs=None, script=CASES_SCRIPT, at_once=2):
    """`peak_extra_bytes` of every implementation in `names`. On CPU the fresh processes run
    `at_once` at a time: a high-water mark is per process, so running side by side changes only how
    long they take (about half the bench's wall time went to them one by one)."""
    if device.type == "cuda":
        return {name: peak_extra_bytes(case, name, shape, dtype, device, fns[name], inputs) for name in names}
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="65536")
    pending, running, out = list(names), {}, {}
    while pending or running:
        while pending and len(running) < at_once:
            name = pending.pop(0)
            command = [sys.executable, str(script), case, name, shape, dtype]
            running[name] = subprocess.Popen(
                command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
        name = next(iter(running))
        process = running.pop(name)
        stdout, stderr = process.communicate()
        if process.returncode != 0:
            raise RuntimeError(f"memory run of {case}/{name} failed:\n{stderr[-3000:]}")
        out[name] = json.loads(stdout.strip().splitlines()[-1])["peak_extra_bytes"]
    return out


def _resident_kib(field):
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def rss_high_water(fn, inputs):
    """Runs fn(inputs) twice in this (fresh) process and returns the resident-memory high water
    mark of the second run above what was resident before it, in bytes. The first run takes lazy
    initialisation (thread pools, MKL buffers, torch.compile) out of the figure."""
    fn(inputs)
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")  # resets VmHWM to the current resident size
    before = _resident_kib("VmRSS")
    result = fn(inputs)
    peak = _resident_kib("VmHWM")
    del result
    return (peak - before) * 1024
