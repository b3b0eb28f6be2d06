"""Every error the tool raises on purpose, in one tree, and the level that contains it.
The bottom layer: it imports nothing of ours, so every module may import it.

::

    CurrentsExportError ............ ``retryable``: whether trying again can help
    ├── ConfigurationError ......... exit 2; nothing is marked done; the run stops
    │   ├── AmplitudeSetupError* ..... Amplitude refused the API key / the request shape
    │   ├── EndpointUnreachable ...... before anything was read: Amplitude (or the privacy
    │   │                              API) refuses, does not resolve, does not answer as
    │   │                              Amplitude, or fails: a wrong URL or an outage
    │   ├── AwsSetupError ............ no credentials, an unreachable S3 endpoint, no bucket
    │   ├── OutputPathError .......... --summary-json, --output, --dead-letter or --state
    │   │                              cannot be written (checked before any work starts)
    │   ├── SettingsError ............ an option's value; names its flag, variable or line
    │   │   └── LambdaConfigError ...... a Lambda environment variable, missing or wrong
    │   ├── MappingConfigError (V) ... the [mapping] table; names the key and its line
    │   ├── SecretError (V) .......... Secrets Manager or SSM cannot give a secret
    │   │   └── ApiKeyError ............ the API key (or secret key): none, or unreadable
    │   ├── SourceError (V) .......... a path or URI given cannot be read as objects
    │   ├── LedgerConfigError (V) .... --state cannot be used
    │   ├── DestinationMismatch ...... the ledger records deliveries to another Amplitude
    │   │                              (host or API key): another --state, or a rebind
    │   ├── StatusError .............. ``status``: the ledger cannot be read
    │   └── DeadLetterConfigError (V)  --dead-letter (or redrive's location) cannot be used
    ├── ObjectError ................ one object; the run goes on with the others
    │   ├── RetryableObjectError ..... exit 1; stays pending, resumes from its checkpoint;
    │   │   │                          an SQS batch item failure in the Lambda
    │   │   ├── DeliveryFailed* ........ Amplitude unreachable, failing, or unverified
    │   │   │   └── AmplitudeUnavailable   the circuit is open: later objects left unread
    │   │   ├── Interrupted ............ a deadline or a signal: progress saved
    │   │   │   └── SendInterrupted* ..... the stop reached a send
    │   │   └── IncompleteObject ....... ends early (being copied, or truncated)
    │   ├── PermanentObjectError ..... failed in the ledger, skipped unless --retry-failed;
    │   │   │                          the Lambda reports it handled (dead letter, metric)
    │   │   ├── UnreadableObject ....... not Avro, corrupt, a refused codec, a block over
    │   │   │                            the cap, a recursive or too deep schema, records
    │   │   │                            overwhelmingly unusable
    │   │   └── DiedReading ............ its decoding ended the process three times
    │   ├── S3ReadError (O) .......... GetObject failed; retryable unless the key is gone
    │   ├── LeaseError ............... the ledger gives the object to another worker
    │   │   ├── LeaseHeld .............. its lease is live: failed here, retried later
    │   │   ├── LeaseLost .............. it took the object over: stop writing
    │   │   └── AlreadyDone ............ it finished the object: counted as already done
    │   └── DeadLetterStoreError (O) . redrive: one file fails; the others go on
    ├── RecordError ................ one event: dead-lettered with a reason
    │   └── EventTooLarge (V) ........ larger than a whole request may be
    ├── NotACurrentsKey (V) ........ a key outside Braze's layout (known by content instead)
    └── PrivacyApiError ............ ``deletions submit``: not taken, stays pending; exit 1

    *   also a SendError: what the failed send had settled is in ``partial``
    (V) also a ValueError, for callers that catch ValueError
    (O) also an OSError: the reader lets it through as a broken stream (retryable, not a
        bad file); redrive counts it as one failed file

A record the mapping cannot use raises nothing here: it is dead-lettered as
``mapping_error``. Anything else raised while processing an object is a retryable object
failure (traceback at ``-vv``). Errors private to one module, and the emulator's (it
imports nothing of ours), are not in the tree.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, Protocol

EXIT_OK, EXIT_UNFINISHED, EXIT_CONFIG = 0, 1, 2
EXIT_DEAD_LETTERED = 3  # only with --fail-on-dead-letter: finished, and dead-lettered some
EXIT_INTERRUPTED_TWICE = 130  # a second SIGINT/SIGTERM: out at once

MAPPING_ERROR = "mapping_error"  # dead-letter reason of records the mapping could not use


class CurrentsExportError(Exception):
    """Base of every error the tool raises on purpose; its message says what to do.

    ``retryable`` (a class attribute, or set per instance) says whether trying again can
    help; :func:`is_retryable` reads it.
    """

    retryable: bool = True


class PartialSend(Protocol):
    """What a send settled before it failed (an ``amplitude.client.SendOutcome``)."""

    @property
    def delivered(self) -> Sequence[Any]: ...

    @property
    def rejected(self) -> Sequence[tuple[Any, str, str]]: ...


class SendError(CurrentsExportError):
    """Mixed into what a failed send raises, so that one ``except SendError`` gets them all:
    ``partial`` says what the send had settled before it stopped (set by the client)."""

    partial: PartialSend | None = None


# ---- the run: configuration ------------------------------------------------------------


class ConfigurationError(CurrentsExportError):
    """The set-up is wrong: stop the run, mark nothing done, exit 2."""

    exit_code = EXIT_CONFIG


class AmplitudeSetupError(ConfigurationError, SendError):
    """Amplitude says the set-up is wrong (API key, request shape)."""


class EndpointUnreachable(ConfigurationError):
    """A run's endpoint cannot be used, found before anything was read (``check``, the
    probe before every run): a wrong URL, a network that blocks it, or an outage."""


class AwsSetupError(ConfigurationError):
    """AWS cannot be used as configured (credentials, endpoint, bucket)."""


class OutputPathError(ConfigurationError):
    """An output path cannot be written; checked before the work starts."""


class SettingsError(ConfigurationError):
    """A value that cannot be used; the message names where it came from."""


class LambdaConfigError(SettingsError):
    """A missing or wrong environment variable of the Lambda; the message names it."""


class MappingConfigError(ConfigurationError, ValueError):
    """The mapping configuration is wrong; the message names the key and the line."""


class SecretError(ConfigurationError, ValueError):
    """A secret cannot be read; the message names where it was looked for, never a value."""


class ApiKeyError(SecretError):
    """The key cannot be found; the message names the setting, never a value."""


class SourceError(ConfigurationError, ValueError):
    """A path or URI given by the user cannot be read as a source of objects."""


class LedgerConfigError(ConfigurationError, ValueError):
    """The --state URI (or the ledger it names) cannot be used: exit 2, nothing done."""


class DestinationMismatch(ConfigurationError):
    """The ledger was bound to another destination (Amplitude host, API key fingerprint)
    than this run's: nothing is read, nothing is marked done. The message names both and
    the ways out (another ledger; or a deliberate rebind when the key was rotated)."""


class StatusError(ConfigurationError):
    """The ledger cannot be read (none at that path, a missing table, no credentials...)."""


class DeadLetterConfigError(ConfigurationError, ValueError):
    """The --dead-letter URI (or the location given to redrive) cannot be used."""


# ---- one object ------------------------------------------------------------------------


class ObjectError(CurrentsExportError):
    """One object could not be finished; the run goes on with the others."""

    retryable = True


class RetryableObjectError(ObjectError):
    """Trying again later can help: the object stays pending and resumes."""

    retryable = True


class PermanentObjectError(ObjectError):
    """Trying again cannot help: the object is recorded as permanently failed."""

    retryable = False


class DiedReading(PermanentObjectError):
    """The process ended while decoding the object, run after run, never getting past the
    same record (it may crash the decoder): failed permanently; ``--retry-failed`` tries
    it again."""


class DeliveryFailed(RetryableObjectError, SendError):
    """Amplitude could not be reached, kept failing, or answered unverifiably."""


class AmplitudeUnavailable(DeliveryFailed):
    """Every request failed for longer than the run's horizon: the run stops sending."""


class Interrupted(RetryableObjectError):
    """The run was asked to stop (a deadline or a signal): the object stays pending."""


class SendInterrupted(Interrupted, SendError):
    """A stop (deadline or signal) reached a send: what it settled is in ``partial``."""


class IncompleteObject(RetryableObjectError):
    """The object ends early: still being written or copied, or truncated; retried, since a
    complete copy may replace it."""


class UnreadableObject(PermanentObjectError):
    """Not a readable Currents Avro file, or one that broke while being read."""


class S3ReadError(ObjectError, OSError):
    """The object could not be fetched or its stream broke.

    ``permanent``: trying again cannot help (the key does not exist); ``retryable`` is then
    False. An OSError, so the reader lets it through as a broken stream, not a bad file.
    """

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.retryable = not permanent


class LeaseError(ObjectError):
    """The ledger says another worker owns the object (or took it over): leave it alone."""


class LeaseHeld(LeaseError):
    """Another worker holds a live lease on the object; it will be retried later."""

    def __init__(self, object_id: str, owner: str, until: float) -> None:
        self.object_id, self.owner, self.until = object_id, owner, until
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(until))
        super().__init__(
            f"{object_id} is being processed elsewhere (by {owner}, lease until {when} UTC); "
            "it will be retried"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.object_id, self.owner, self.until)


class LeaseLost(LeaseError):
    """Another worker took the object over; this worker must stop writing to it."""

    def __init__(self, object_id: str) -> None:
        self.object_id = object_id
        super().__init__(
            f"{object_id}: another worker took this object over; this attempt stops writing"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.object_id,)


class AlreadyDone(LeaseError):
    """A claim found the object done (another worker finished it in the meantime)."""

    def __init__(self, object_id: str) -> None:
        self.object_id = object_id
        super().__init__(f"{object_id} was already completed by another worker; nothing to do")

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.object_id,)


class DeadLetterStoreError(ObjectError, OSError):
    """A dead-letter file or object could not be read, replaced or deleted. An OSError, so
    redrive counts it as one failed file and goes on."""


# ---- one record ------------------------------------------------------------------------


class RecordError(CurrentsExportError):
    """One event cannot be sent: it is dead-lettered with a reason; its object goes on."""


class EventTooLarge(RecordError, ValueError):
    """A single event is larger than a whole request may be."""


# ---- elsewhere -------------------------------------------------------------------------


class NotACurrentsKey(CurrentsExportError, ValueError):
    """The key does not name a Currents Avro file."""


class PrivacyApiError(CurrentsExportError):
    """Amplitude did not take a deletion request; what was not sent stays pending.

    ``refused``: Amplitude answered that this request is wrong (a 4xx other than 401, 403
    and 429), so sending it again cannot help; else it may (an outage, a stop)."""

    def __init__(self, message: str, *, refused: bool = False) -> None:
        super().__init__(message)
        self.refused = refused


def is_retryable(exc: BaseException) -> bool:
    """Whether an object failing with ``exc`` may succeed on a later attempt: what an error
    of this tree says (``retryable``); any other error is retryable."""
    return exc.retryable if isinstance(exc, CurrentsExportError) else True


def ends_run(exc: BaseException) -> bool:
    """Whether ``exc`` stops the whole run (not one object): a configuration Amplitude or
    AWS refuses, Amplitude down for longer than the horizon, or a stop (deadline, signal)."""
    return isinstance(exc, (ConfigurationError, AmplitudeUnavailable, Interrupted))
