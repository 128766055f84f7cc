"""Injected hard crashes for crash tests: `CORPUSDB_FAILPOINT=<job>.after_part=N`.

    CORPUSDB_FAILPOINT=score.after_part=2 corpusdb score demo/db --model out/tiny --as tiny

The process exits with status 75 right after its N-th part is in place: no cleanup, no marker,
no catalog update, as after a power cut. Tests then re-run the job and compare with a clean run.
With `CORPUSDB_FAILPOINT_ONCE=PATH` only the first process to get there crashes (it creates PATH),
so a retried task (Ray, a process pool) completes.
"""

from __future__ import annotations

import os

ENV = "CORPUSDB_FAILPOINT"
ONCE_ENV = "CORPUSDB_FAILPOINT_ONCE"  # a file path: crash only if it does not exist yet (then create it)
EXIT_STATUS = 75


def after_part(job: str, parts_written: int) -> None:
    """Exit hard if the failpoint for `job` is set and `parts_written` has reached it."""
    spec = os.environ.get(ENV, "")
    prefix = f"{job}.after_part="
    if spec.startswith(prefix) and parts_written >= int(spec[len(prefix):]):
        once = os.environ.get(ONCE_ENV)
        if once:
            try:
                with open(once, "x"):
                    pass
            except FileExistsError:
                return  # crashed before: this is the retry
        os._exit(EXIT_STATUS)
