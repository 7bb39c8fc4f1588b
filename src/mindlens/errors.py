"""Errors that tell the user what was wrong and how to fix it.

Every error mindlens raises on bad input derives from :class:`MindlensError`, so the CLI
can print one line and exit with code 2 instead of a traceback.
"""

from __future__ import annotations


class MindlensError(Exception):
    """Base class of every error mindlens raises on purpose."""


class InputError(MindlensError, ValueError):
    """An image, mask, file or argument the user gave cannot be used as it is."""


class ModelError(MindlensError, ValueError):
    """The model cannot be loaded, or does not behave like an image classifier."""


class NotApplicableError(MindlensError, ValueError):
    """This method cannot run on this model (e.g. CAM on a head that is not GAP + linear).

    The message names the reason and a method that does apply.
    """


class InputWarning(UserWarning):
    """Input that mindlens uses, but not as given (a frame picked, a range rescaled, a file
    skipped); the message says what was done and how to silence it."""


class CostWarning(UserWarning):
    """A call that will take long (over :data:`mindlens.progress.WARN_SECONDS`): the
    message gives the estimate and the faster options."""
