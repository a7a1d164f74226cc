"""shapegrad.allocator: large freed blocks kept for reuse (glibc on Linux), measured by page faults."""

import os
import subprocess
import sys

import pytest

from shapegrad import allocator, cli

GLIBC = allocator._glibc() is not None


def _fresh_block_faults():
    """Fewest faults a freshly mapped 64 MB block costs: one per 4 KB page, or per 2 MB huge page
    where the kernel backs every mapping with huge pages (transparent_hugepage "always")."""
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            always = "[always]" in f.read()
    except OSError:
        always = False
    return 16 if always else 8000

# A child process (the allocator is process-wide) that frees and re-allocates a 64 MB block three
# times, touching every page, and prints the fewest minor page faults of the last two rounds.
_CHILD = """
import importlib.util, resource, sys
spec = importlib.util.spec_from_file_location("allocator", sys.argv[1])
allocator = importlib.util.module_from_spec(spec)
spec.loader.exec_module(allocator)
applied = allocator.keep_freed_memory() if sys.argv[2] == "keep" else None
counts = []
for _ in range(3):
    start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = bytearray(1 << 26)
    block[:: 1 << 12] = b"\\1" * (1 << 14)  # one byte in every 4 KB page
    del block
    counts.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start)
print(applied, min(counts[1:]))
"""


def _faults(mode, **env):
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    environment.update(env)
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, allocator.__file__, mode],
        capture_output=True, text=True, check=True, env=environment,
    ).stdout.split()
    return out[0], int(out[1])


@pytest.mark.skipif(not GLIBC, reason="glibc's mallopt only")
def test_kept_blocks_are_reused_without_page_faults():
    applied, kept = _faults("keep")
    _, system = _faults("system")
    assert applied == "True"
    # glibc's defaults map the 64 MB block afresh each time: a fault per page (16,384).
    assert system > _fresh_block_faults(), system
    assert kept < system / 20, (kept, system)


@pytest.mark.skipif(not GLIBC, reason="glibc's mallopt only")
def test_the_users_own_malloc_settings_are_kept():
    applied, faults = _faults("keep", MALLOC_MMAP_MAX_="65536")
    assert applied == "False"
    assert faults > _fresh_block_faults(), faults  # glibc's default behaviour, as the user asked


def test_the_command_line_keeps_freed_memory(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(allocator, "keep_freed_memory", lambda: calls.append(1) or True)
    # A refused command (exit 2) still starts the same way; nothing is trained.
    assert cli.main(["fit", str(tmp_path / "missing"), "--shapes", "disk", "--out", str(tmp_path / "out")]) == 2
    assert calls == [1]
