"""Exceptions raised by the Maison core.

Daytona's SDK raises many classes for the same few situations a caller must tell apart
(gone, stopped, overloaded); these collapse them into what a caller can act on.
"""

from __future__ import annotations


class MaisonError(Exception):
    """Base class of every error the Maison core raises on purpose."""


class SandboxGoneError(MaisonError):
    """The sandbox no longer exists (deleted, auto-deleted, or never existed)."""


class SandboxStoppedError(MaisonError):
    """The sandbox exists but is stopped; `Maison.attach` starts it again."""


class SandboxUnavailableError(MaisonError):
    """Daytona could not do what was asked (rate limit, server error, timeout, network)."""


class ClaudeNotFoundError(MaisonError, RuntimeError):
    """The `claude` binary is not on the sandbox's PATH."""


class InstallError(MaisonError, RuntimeError):
    """Node.js or Claude Code could not be installed in a new sandbox."""


class RunTimeoutError(MaisonError, TimeoutError):
    """A Claude Code run exceeded its time limit and was killed."""


class NotARegularFileError(MaisonError, OSError):
    """A path in the sandbox is a symlink, device or pipe where a regular file is needed."""
