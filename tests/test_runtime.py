"""ffspace.runtime: the allocator setting the ffspace command and the timing worker apply (in a child process, so
the test process keeps its own allocator)."""

import platform
import subprocess
import sys

import pytest


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_keep_freed_memory_takes_effect_and_is_reported():
    code = ("from ffspace import runtime; before = runtime.freed_memory_kept(); "
            "print(before, runtime.keep_freed_memory(), runtime.keep_freed_memory(), runtime.freed_memory_kept())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "True", "True", "True"]
