"""glibc tuning by `rmserve serve` so resident memory follows live memory: trims, or a fixed mmap
threshold."""

from __future__ import annotations

import platform
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from service import allocator
from service.cli import _serve

REPO = Path(__file__).resolve().parents[2]
glibc_only = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")

# In a fresh process (glibc's state is per process): free one 16 MiB block, which raises glibc's
# own threshold to 16 MiB, then ask for 4 MiB and print whether glibc mmapped it.
_PROBE = textwrap.dedent("""
    import ctypes, sys
    from service.allocator import fix_mmap_threshold
    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks",
                    "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
    libc = ctypes.CDLL(None)
    libc.mallinfo2.restype = MallInfo2
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    if sys.argv[1] == "fixed":
        assert fix_mmap_threshold(1 << 20)
    libc.free(libc.malloc(16 << 20))
    before = libc.mallinfo2().hblks
    block = libc.malloc(4 << 20)
    print(libc.mallinfo2().hblks - before)
""")


def _mmapped_after_a_big_free(mode: str) -> bool:
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", _PROBE, mode], env=env, capture_output=True, text=True,
                         check=True, timeout=60)
    return out.stdout.strip() == "1"


@glibc_only
def test_a_fixed_threshold_keeps_big_blocks_mapped_after_glibc_would_have_raised_it() -> None:
    # Unfixed, glibc cuts the block from the heap, where its freed space stays resident: the
    # growth the soak saw. Fixed, it is mapped, and unmapped again on free.
    assert not _mmapped_after_a_big_free("default")
    assert _mmapped_after_a_big_free("fixed")


@pytest.mark.parametrize("env", [{"MALLOC_MMAP_THRESHOLD_": "65536"},
                                 {"LD_PRELOAD": "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"}])
def test_the_operators_choice_wins(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert not allocator.fix_mmap_threshold(1 << 20)


def test_zero_leaves_glibc_alone() -> None:
    assert not allocator.fix_mmap_threshold(0)


def test_serve_fixes_a_threshold_it_is_given_before_loading_models(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    monkeypatch.setattr(allocator, "fix_mmap_threshold", calls.append)
    monkeypatch.setattr("service.logs.configure_logging", lambda *_: None)  # pytest's logging stays

    def no_models(*_: object) -> None:
        assert calls == [1024 * 1024], "the threshold must be fixed before any model loads"
        raise SystemExit(3)

    monkeypatch.setattr("service.lifecycle.locate_models", no_models)
    with pytest.raises(SystemExit):
        _serve(["--model", "some-model", "--malloc-mmap-threshold-kib", "1024"])
    assert calls == [1024 * 1024]


# In a fresh process: 128 MiB of small blocks touched and freed below a live one, so glibc cannot
# give them back from the heap's top; resident memory stays up until something trims.
_TRIM_PROBE = textwrap.dedent("""
    import ctypes
    from service.allocator import HeapTrimmer, resident_bytes
    MIB = 1 << 20
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    trimmer = HeapTrimmer(16 * MIB)
    blocks = [libc.malloc(64 * 1024) for _ in range(2048)]
    for block in blocks:
        ctypes.memset(block, 1, 64 * 1024)
    pin = libc.malloc(64)
    for block in blocks:
        libc.free(block)
    before = resident_bytes()
    trimmer.after_forward()
    after = resident_bytes()
    trimmer.after_forward()  # now within the slack of where the trim left it: no second trim
    print((before - after) // MIB, trimmer.trims)
""")


@glibc_only
def test_the_trimmer_gives_freed_heap_memory_back_once_it_exceeds_the_slack() -> None:
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", _TRIM_PROBE], env=env, capture_output=True, text=True,
                         check=True, timeout=60)
    given_back_mib, trims = map(int, out.stdout.split())
    assert given_back_mib >= 100 and trims == 1


def test_the_trimmer_checks_after_every_forward_even_a_failed_one() -> None:
    checks: list[int] = []
    trimmer = allocator.HeapTrimmer(1 << 30)
    trimmer.after_forward = lambda: checks.append(1)  # type: ignore[method-assign]

    def failing(rows: object) -> list[float]:
        raise RuntimeError("out of memory")

    assert trimmer.wrap(lambda rows: [1.0])(["a"]) == [1.0]
    with pytest.raises(RuntimeError):
        trimmer.wrap(failing)(["a"])
    assert checks == [1, 1]


def test_no_trimmer_for_slack_zero_or_another_allocator(monkeypatch: pytest.MonkeyPatch) -> None:
    assert allocator.HeapTrimmer.for_this_process(0) is None
    monkeypatch.setenv("LD_PRELOAD", "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2")
    assert allocator.HeapTrimmer.for_this_process(64 << 20) is None
