"""The two ways a run stops on purpose: the folder holds another run, or a write failed."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import InputError, MindlensError


class RunConflictError(InputError):
    """The output folder holds a run whose manifest differs from this one."""


class RunWriteError(MindlensError):
    """Writing a run's file failed (a full disk, a lost mount); what was kept is said."""

    def __init__(self, path: Path, cause: OSError, kept: str = "") -> None:
        reason = os.strerror(cause.errno) if cause.errno else str(cause)
        self.path, self.cause = path, cause
        super().__init__(f"could not write {path}: {reason}"
                         + (f"; {kept}" if kept else "")
                         + "; free space (or fix the folder) and run again to resume")
