"""Run a script in a fresh interpreter where `modeling_fmrilm` cannot be imported (trust_remote_code tests)."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

PRELUDE = textwrap.dedent(
    """
    import importlib.abc, sys
    sys.path.insert(0, {site!r})

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] == "modeling_fmrilm":
                raise ImportError("modeling_fmrilm is blocked in this test")

    sys.meta_path.insert(0, Block())
    """
)


def run_without_package(script: str, workdir: Path, timeout: float = 180) -> subprocess.CompletedProcess:
    """Run `script` with `python -I -S` (no site, no editable installs), offline, `modeling_fmrilm` blocked.

    Only the interpreter's site-packages is on the path, so transformers and torch import; the
    script ends by asserting nothing of `modeling_fmrilm` was imported when it wants to check that.
    """
    source = PRELUDE.format(site=sysconfig.get_paths()["purelib"]) + textwrap.dedent(script)
    env = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(workdir / "hf_home"), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-I", "-S", "-c", source],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
