"""Peak memory of code run in a fresh Python process, for the bench scripts.

`resource.getrusage(RUSAGE_SELF).ru_maxrss` is no use here: a child forked from a large bench
process reports the parent's high-water mark. `VmHWM` in `/proc/self/status` belongs to the
address space that `exec` creates, so it is the child's own peak.
"""

from __future__ import annotations

import subprocess
import sys

PRINT_PEAK = "\nprint('PEAK_RSS_MIB', int(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1]) / 1024)\n"


def run_with_peak_rss(code: str, *args: str) -> tuple[str, float]:
    """Run `code` with `args` in a new interpreter; return its stdout (without the peak line) and peak RSS in MiB."""
    result = subprocess.run(
        [sys.executable, "-c", code + PRINT_PEAK, *args], capture_output=True, text=True, check=True
    )
    lines = result.stdout.strip().splitlines()
    return "\n".join(lines[:-1]), float(lines[-1].split()[1])
