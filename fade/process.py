"""Process-wide settings fade makes before any heavy work (the CLI calls ``configure_process``).

Neither changes a result; both were measured on this project's 2-core machine (docs/performance.md).

* **OpenMP waiting.** Threads that busy-wait between parallel regions burn the cores another job
  needs: with two jobs on 2 cores the batch-1 evaluation loop took 27 s with the default (active)
  policy and 2.9 s with PASSIVE. Sweeps share machines, so fade defaults to PASSIVE. It must be set
  before torch loads; an ``OMP_WAIT_POLICY`` in the environment wins.
* **glibc heap growth.** glibc serves allocations below its mmap threshold from the heap, and raises
  that threshold (up to 32 MiB) each time a large mmapped block is freed. Calibration allocates
  and frees per-batch activation tensors of a few MiB to tens of MiB in changing order, so after
  the first frees they land on the heap, which fragments and never shrinks: peak RSS grew by
  20.3 MiB per calibration utterance on tiny.en against 13.2 MiB of documented caches. Fixing the
  threshold at glibc's initial 128 KiB (``mallopt(M_MMAP_THRESHOLD)``, which also stops the
  adjustment) brought it to 9.7 MiB per utterance and the peak at 64 utterances from 2814 to
  1817 MiB. A ``MALLOC_MMAP_THRESHOLD_`` in the environment wins; other C libraries are left alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
import re
from contextlib import contextmanager
from typing import Iterator

#: glibc's M_MMAP_THRESHOLD parameter number (malloc.h) and its initial value.
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 128 * 1024


def fix_mmap_threshold(threshold: int = MMAP_THRESHOLD_BYTES) -> bool:
    """Fix glibc's mmap threshold; True if it was set here (False: not glibc, or the environment decides)."""
    if "MALLOC_MMAP_THRESHOLD_" in os.environ or platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, int(threshold)))


def configure_process() -> None:
    """Call first thing in a process that will run fade's heavy work (before torch is imported)."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    fix_mmap_threshold()


def tf32_enabled() -> bool:
    """Whether cuBLAS float32 products or cuDNN convolutions may round to TF32."""
    import torch

    return bool(torch.backends.cuda.matmul.allow_tf32 or torch.backends.cudnn.allow_tf32)


def set_tf32(enabled: bool) -> None:
    """TF32 for cuBLAS float32 products and cuDNN convolutions together (``runner.tf32``).

    PyTorch's own defaults differ per op (products IEEE, convolutions TF32); off for both keeps a
    GPU's calibration statistics IEEE float32, as on the CPU.
    """
    import torch

    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = bool(enabled)


@contextmanager
def tf32(enabled: bool) -> Iterator[None]:
    """``set_tf32(enabled)`` for the block, then both flags as they were."""
    import torch

    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    set_tf32(enabled)
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def _processor_name() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def platform_label(record: dict[str, object] | None) -> str:
    """A short name of a platform record: ``AMD EPYC, AVX512, 2 threads, torch 2.13.0+cpu`` (the GPU first
    where one ran). Results are grouped by it, so it names everything that changes their rounding."""
    if not record:
        return "unknown"
    cpu = str(record.get("cpu", "?"))
    for noise in ("(R)", "(TM)", "(tm)", " Processor", " CPU"):
        cpu = cpu.replace(noise, "")
    cpu = re.sub(r"\s+@.*$", "", " ".join(cpu.split()))
    label = f"{cpu}, {record.get('cpu_capability', '?')}, {record.get('torch_threads', '?')} threads"
    if record.get("torch"):
        label += f", torch {record['torch']}"
    return f"{record['gpu']} ({label})" if record.get("gpu") else label


def platform_tag(device: str = "auto", threads: int | None = None) -> str:
    """A folder name for the platform a job runs on (``amd-epyc-avx512-2t``, ``cuda-nvidia-h200``).

    The FADE grid keeps one sweep folder per platform (conf/experiment/fade_grid.yaml): runs are
    only compared within one, and a grid resumed on another machine starts its own set of seeds
    instead of pairing its runs with another CPU's.
    """
    import torch

    device = str(device or "auto")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and torch.cuda.is_available():
        name = "cuda " + torch.cuda.get_device_name(torch.device(device))
    else:
        cores = os.cpu_count() or 1
        name = f"{platform_label({'cpu': _processor_name(), 'cpu_capability': torch.backends.cpu.get_cpu_capability(), 'torch_threads': threads or cores}).replace(' threads', 't')}"
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def code_version() -> str:
    """The fade commit that ran a job (``+dirty`` with uncommitted changes), else the package version."""
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no", "--", "fade", "conf"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
        return commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("fade")
        except PackageNotFoundError:
            return "unknown"


def platform_record(device: "str | object") -> dict[str, object]:
    """What ran a job, stored with its results.

    Low-bit results are sensitive to floating-point detail (vector kernel paths, thread counts):
    at W3 one changed rounding decision early in the model moves the test WER by tenths of a point,
    the size of the differences between methods. Runs are compared like for like only when this
    matches (``fade-aggregate`` warns otherwise).
    """
    import torch

    record = {"torch": torch.__version__, "cpu": _processor_name(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
              "cpu_cores": os.cpu_count(), "torch_threads": torch.get_num_threads()}
    if str(device).startswith("cuda") and torch.cuda.is_available():
        record["gpu"] = torch.cuda.get_device_name(torch.device(str(device)))
        record["cuda"] = torch.version.cuda
        record["tf32"] = tf32_enabled()
    return record
