"""Resumable runs: what every long job (``evaluate``, later ``scan``) shares.

- :mod:`.manifest`: what the run is (model, data, settings, version), written at its
  start; a restart resumes only the same run and refuses another one in one line;
- :mod:`.journal`: the append-only, fsync'd record of finished rows, each row naming its
  input and the input's hash; a torn last row is dropped and redone;
- :mod:`.atomic`: final files written to a temporary file and renamed;
- :mod:`.fingerprint`: the content hashes the manifest is made of.

A kill at any instant or a full disk loses no finished row: a row counts as finished
only once it is on disk, and nothing finished is ever rewritten in place.
"""

from .atomic import atomic_open, write_atomic
from .errors import RunConflictError, RunWriteError
from .fingerprint import describe, file_hash, input_hash, model_fingerprint, weights_hash
from .journal import Journal
from .manifest import MANIFEST, Run, difference, make_manifest, open_run

__all__ = ["MANIFEST", "Journal", "Run", "RunConflictError", "RunWriteError", "atomic_open",
           "describe", "difference", "file_hash", "input_hash", "make_manifest",
           "model_fingerprint", "open_run", "weights_hash", "write_atomic"]
