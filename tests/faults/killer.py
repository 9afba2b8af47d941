"""The fake trainer (``tests/train/harness.py``) in a process that SIGKILLs itself in the middle of a save.

``EASEL_KILL_AT_STATE_SAVE=N``: at the N-th training state written, after its temp file is complete and
before it is renamed into place (the point that leaves a hidden temp file behind).
"""

import os
import signal
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def kill_at_state_save(count: int) -> None:
    real, seen = os.replace, [0]

    def replace(source, target, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        if str(target).endswith(".state.pt"):
            seen[0] += 1
            if seen[0] == count:
                os.kill(os.getpid(), signal.SIGKILL)
        return real(source, target, *args, **kwargs)

    os.replace = replace


if __name__ == "__main__":
    if os.environ.get("EASEL_KILL_AT_STATE_SAVE"):
        kill_at_state_save(int(os.environ["EASEL_KILL_AT_STATE_SAVE"]))
    from tests.train.harness import run_main

    sys.exit(run_main(sys.argv[1:]))
