"""Under mpiexec -n 2: a run in which rank 1 fails at step 4 (argv[2]: "raise", "kill" or "diverge"), after the
step-3 checkpoint in the folder argv[1]; or ("data") in which rank 1 holds other tokens than rank 0."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import DATA, inject_fault, trainer, without_plots  # noqa: E402

from npformer.parallel.mpi import abort_on_error, note_when_stopped, world  # noqa: E402

without_plots()
with abort_on_error():
    other = world().Get_rank() == 1 and sys.argv[2] == "data"
    t = trainer(sys.argv[1], max_iters=8, check_every=1, data=(DATA + 1) % 17 if other else DATA)
    if t.is_root:
        note_when_stopped(lambda: f"stopped at step {t.step}: {t.last_checkpoint_note()}")
    inject_fault(t, sys.argv[2], step=4)
    t.run()
