"""The allocator setting that the pdnn command applies."""
import platform

import pytest

from pdnn.malloc import keep_large_buffers


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_glibc_accepts_the_thresholds():
    assert keep_large_buffers() is True
