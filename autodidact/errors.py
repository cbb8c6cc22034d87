"""The one root exception of Autodidact and its subclasses.

Every error the framework raises on purpose derives from :class:`AutodidactError`; each
subclass also inherits the builtin it refines, so ``except ValueError`` keeps working.
The CLI turns any ``AutodidactError`` into a one-line message and a non-zero exit code,
so messages say what is wrong *and* what to do about it.
"""

from __future__ import annotations


class AutodidactError(Exception):
    """Root of every error raised on purpose by Autodidact."""


class ConfigError(AutodidactError, ValueError):
    """A config file, override or argument is malformed or names something unknown."""


class NotRegisteredError(ConfigError, LookupError):
    """An id was asked of the registry that nobody registered."""


class TaskDataError(AutodidactError, ValueError):
    """A task file or bundled suite cannot be read or has malformed rows."""


class ModelLoadError(AutodidactError, OSError):
    """A model path, id or checkpoint cannot be loaded."""


class ModelServerError(AutodidactError, ConnectionError):
    """A model server could not be reached or kept failing after retries."""


class ModelTimeoutError(ModelServerError, TimeoutError):
    """A model server did not answer within the configured timeout."""


class StoreError(AutodidactError, RuntimeError):
    """The trajectory store cannot be opened, written or read."""


class NothingToTrainError(AutodidactError, ValueError):
    """A training run was asked for but the selected data is empty."""


class SandboxUnavailableError(AutodidactError, RuntimeError):
    """No safe way to run untrusted code here (bubblewrap missing) and unsafe mode was not chosen."""


class BrowserUnavailableError(AutodidactError, RuntimeError):
    """Playwright or a Chromium to drive is missing, the browser cannot start, or it died mid-episode."""


class EnvironmentUnavailableError(AutodidactError, RuntimeError):
    """What an environment runs on is missing or failed: a server (a bundled site's, MiniWoB++'s)
    stopped during an episode, or a package it drives (BrowserGym) is not installed or failed."""
