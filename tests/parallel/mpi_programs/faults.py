"""Under mpiexec -n 2: a run in which rank 1 fails at step 4 (argv[2]: "raise", "kill" or "diverge"), after the
step-3 checkpoint in the folder argv[1]."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import inject_fault, trainer  # noqa: E402

from npformer.parallel.mpi import abort_on_error  # noqa: E402

with abort_on_error():
    t = trainer(sys.argv[1], max_iters=8, check_every=1)
    inject_fault(t, sys.argv[2], step=4)
    t.run()
