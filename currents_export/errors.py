"""Every error the tool raises on purpose, and the level at which each one is contained.

::

    CurrentsExportError
    ├── ConfigurationError ........ exit 2; nothing is marked done; the run stops
    │   ├── AmplitudeSetupError ..... Amplitude refused the API key / the request shape
    │   ├── AwsSetupError ........... no AWS credentials, an S3 endpoint that cannot be reached,
    │   │                             a dead-letter bucket that does not exist
    │   ├── LedgerConfigError ....... --state cannot be used (ledger.base)
    │   ├── DeadLetterConfigError ... --dead-letter cannot be used (deadletter)
    │   └── OutputPathError ......... --summary-json / --output / --dead-letter / --state
    │                                 cannot be written (checked before any work starts)
    └── ObjectError ............... one object; the run goes on with the others
        ├── RetryableObjectError .... exit 1; the object stays pending (resumes from its
        │   │                         checkpoint); SQS batch item failure in the Lambda
        │   ├── DeliveryFailed ........ Amplitude unreachable or failing past the horizon, or
        │   │   │                       answering without a verified acknowledgement
        │   │   └── AmplitudeUnavailable  the whole run's circuit is open: every later object
        │   │                             is left pending without being read
        │   ├── Interrupted ........... a deadline or a signal: progress saved, resumable
        │   └── IncompleteObject ...... the object ends early: still being written or copied,
        │                               or truncated; retried, since a complete copy may
        │                               replace it
        └── PermanentObjectError .... retrying cannot help: recorded as failed in the ledger,
            │                         skipped by later runs unless --retry-failed; the Lambda
            │                         reports it handled (object-level dead letter, metric)
            └── UnreadableObject ...... not Avro, corrupt, a codec we refuse, a decompressed
                                        block over the cap, records overwhelmingly unusable

Whether trying again can help is each class's ``retryable`` (from :class:`Retryability`,
which S3's read error shares: not retryable for a missing key); :func:`is_retryable` reads it.

A *record* that cannot be mapped is not an error at any level above: it is dead-lettered
with reason ``mapping_error`` and the exception's message, and its object goes on.
Anything else raised while processing an object is contained by the pipeline as a
retryable object failure (logged with its traceback at ``-vv``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from currents_export.amplitude.client import SendOutcome

EXIT_OK, EXIT_UNFINISHED, EXIT_CONFIG = 0, 1, 2
EXIT_INTERRUPTED_TWICE = 130  # a second SIGINT/SIGTERM: out at once

MAPPING_ERROR = "mapping_error"  # dead-letter reason of records the mapping could not use


class Retryability:
    """Mixed into an error that says whether trying again can help: ``retryable`` (a class
    attribute, or set per instance) is what :func:`is_retryable` reads."""

    retryable: bool = True


class CurrentsExportError(Retryability, Exception):
    """Base of every error the tool raises on purpose; its message says what to do."""


class ConfigurationError(CurrentsExportError):
    """The set-up is wrong: stop the run, mark nothing done, exit 2."""

    exit_code = EXIT_CONFIG


class AmplitudeSetupError(ConfigurationError):
    """Amplitude says the set-up is wrong (API key, request shape).

    ``partial`` says what a send had settled before it stopped (see ``SendError``).
    """

    partial: SendOutcome[Any] | None = None


class AwsSetupError(ConfigurationError):
    """AWS cannot be used as configured (credentials, endpoint, bucket)."""


class OutputPathError(ConfigurationError):
    """An output path cannot be written; checked before the work starts."""


class ObjectError(CurrentsExportError):
    """One object could not be finished; the run goes on with the others."""

    retryable = True


class RetryableObjectError(ObjectError):
    """Trying again later can help: the object stays pending and resumes."""

    retryable = True


class PermanentObjectError(ObjectError):
    """Trying again cannot help: the object is recorded as permanently failed."""

    retryable = False


class DeliveryFailed(RetryableObjectError):
    """Amplitude could not be reached, kept failing, or answered unverifiably.

    ``partial`` says what a send had settled before it stopped.
    """

    partial: SendOutcome[Any] | None = None


class AmplitudeUnavailable(DeliveryFailed):
    """Every request failed for longer than the run's horizon: the run stops sending."""


class Interrupted(RetryableObjectError):
    """The run was asked to stop (a deadline or a signal): the object stays pending."""


class SendInterrupted(Interrupted):
    """A stop (deadline or signal) reached a send: what it settled is in ``partial``."""

    partial: SendOutcome[Any] | None = None


class IncompleteObject(RetryableObjectError):
    """The object ends early: still being written or copied, or truncated; retried, since a
    complete copy may replace it."""


class UnreadableObject(PermanentObjectError):
    """Not a readable Currents Avro file, or one that broke while being read."""


# What a failed send raises; each carries ``partial``.
SendError = (AmplitudeSetupError, DeliveryFailed, SendInterrupted)


def is_retryable(exc: BaseException) -> bool:
    """Whether an object failing with ``exc`` may succeed on a later attempt.

    What the error says (:class:`Retryability`: this tree, and S3ReadError, not retryable
    for S3's NoSuchKey); any other error is retryable.
    """
    return exc.retryable if isinstance(exc, Retryability) else True


def ends_run(exc: BaseException) -> bool:
    """Whether ``exc`` stops the whole run (not one object): a configuration Amplitude or
    AWS refuses, Amplitude down for longer than the horizon, or a stop (deadline, signal)."""
    return isinstance(exc, (ConfigurationError, AmplitudeUnavailable, Interrupted))
