"""Process-wide settings of fade/process.py, checked by their mechanism in fresh interpreters."""

import os
import platform
import subprocess
import sys

import pytest

# After a freed 8 MiB mmapped block glibc raises its mmap threshold, so the next 2 MiB block comes
# from the heap, below the program break (how far the break moves depends on the heap's free top,
# so the test asks where the block is); with the threshold fixed it is mmapped, far above the break.
HEAP_GROWTH = """
import ctypes, ctypes.util, sys
from fade.process import fix_mmap_threshold
if sys.argv[1] == "fix":
    assert fix_mmap_threshold()
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.sbrk.restype, libc.sbrk.argtypes = ctypes.c_void_p, [ctypes.c_ssize_t]
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
libc.free(libc.malloc(8 << 20))
block = libc.malloc(2 << 20)
print(int(block < libc.sbrk(0)))
"""


def _block_on_heap(mode: str, **env) -> bool:
    environment = {k: v for k, v in os.environ.items() if k != "MALLOC_MMAP_THRESHOLD_"} | env
    out = subprocess.run([sys.executable, "-c", HEAP_GROWTH, mode], env=environment, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-1000:]
    return out.stdout.strip() == "1"


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")
def test_fixed_mmap_threshold_keeps_large_blocks_off_the_heap():
    assert _block_on_heap("nofix")  # the dynamic threshold put the block on the heap
    assert not _block_on_heap("fix")


def test_an_mmap_threshold_in_the_environment_wins(monkeypatch):
    from fade.process import fix_mmap_threshold

    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "65536")
    assert fix_mmap_threshold() is False


def test_code_version_names_the_checkout_commit():
    from pathlib import Path

    from fade.process import code_version

    root = Path(__file__).resolve().parent.parent
    head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True)
    if head.returncode != 0:
        pytest.skip("not a git checkout")
    assert code_version().split("+")[0] == head.stdout.strip()
