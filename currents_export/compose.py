"""The composition root: :class:`~currents_export.settings.Settings` in, a ready run out.

The command line, the worker processes and the Lambda all build runs here:
:func:`open_destinations` (the ledger and the dead letter), :func:`check_destination` (the
ledger delivers to this Amplitude only), :func:`build_pipeline` (a new client and pipeline
per run over them), :func:`build_worker_pipeline` (both, in a worker).
Nothing built is changed afterwards. Set-up problems are
:class:`~currents_export.errors.ConfigurationError`\\ s naming the option, raised before any
work starts.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeVar

from currents_export.amplitude.api import (
    REQUEST_LIMITS,
    THROTTLE_PAUSE_S,
    RequestLimits,
    RetryPolicy,
    endpoint_url,
)
from currents_export.amplitude.client import AmplitudeClient
from currents_export.amplitude.pacing import Pacer, PaceState, RateBudget
from currents_export.amplitude.probe import ProbeAnswer, probe_upload
from currents_export.aws.explain import explain
from currents_export.core.dryrun import DryRunOutbox
from currents_export.core.lanes import EVENTS_PER_REQUEST, Lanes, Sink
from currents_export.core.pipeline import OpenOutbox, Pipeline
from currents_export.counts import ObjectReport
from currents_export.deadletter import DeadLetter, open_dead_letter
from currents_export.deletions.privacy_api import PrivacyClient, privacy_url
from currents_export.deletions.store import (
    DeletionStore,
    DynamoDbDeletionStore,
    SqliteDeletionStore,
)
from currents_export.deletions.tracker import DeletionTracker, NoDeletions
from currents_export.errors import (
    ConfigurationError,
    DeadLetterConfigError,
    DestinationMismatch,
    EndpointUnreachable,
    LedgerConfigError,
    OutputPathError,
    PrivacyApiError,
    SettingsError,
    SourceError,
)
from currents_export.ledger import Ledger, NoLedger, dynamodb_table, open_ledger
from currents_export.ledger.base import Destination
from currents_export.ledger.destination import the_destination
from currents_export.ledger.dynamodb import DynamoDbLedger
from currents_export.ledger.sqlite import SqliteLedger
from currents_export.settings import LAMBDA, OPTION, Settings
from currents_export.sources.local import find_local_objects
from currents_export.sources.s3 import S3Location, list_objects, s3_client
from currents_export.stopping import Stop
from currents_export.support.allocator import keep_large_blocks_apart
from currents_export.support.logs import setup_logging
from currents_export.support.privatefiles import open_private_for_writing

R = TypeVar("R")
log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


@dataclass(frozen=True, slots=True)
class AwsCallLimits:
    """How long one S3 or DynamoDB call may take: per attempt, and how many attempts (the
    Lambda's are derived from its deadline margin)."""

    connect_timeout: float
    read_timeout: float
    max_attempts: int

    @property
    def worst_case_s(self) -> float:
        """One call, every attempt timing out, with botocore's backoff between them."""
        return self.max_attempts * (self.connect_timeout + self.read_timeout) + AWS_BACKOFF_S


AWS_BACKOFF_S = 3.0  # botocore standard mode: up to 1 s, then up to 2 s, between 3 attempts


@dataclass(frozen=True, slots=True)
class Destinations:
    """What runs write to: the ledger, the dead letter (and the S3 client they use)."""

    ledger: Ledger
    dead_letter: DeadLetter
    s3: S3Client | None  # None when nothing here needs S3
    # [deletions] on (and not a dry run): the tracker lives as long as the ledger
    deletions: DeletionTracker | NoDeletions = field(default_factory=NoDeletions)


def check_outputs(settings: Settings) -> None:
    """Fail before any work when an output cannot be written (not after a long run)."""
    for name, flag in (("summary_json", "--summary-json"), ("output", "--output")):
        value = getattr(settings, name)
        if value:
            _check_writable_file(value, flag)
    state = settings.state
    if not settings.dry_run:
        try:
            dynamodb_table(state)
        except LedgerConfigError as exc:
            raise SettingsError(str(exc)) from None
    if not settings.dry_run and state and "://" not in state:
        if Path(state).is_dir():
            raise OutputPathError(f"--state {state}: is a directory; give the ledger's file "
                                  "name (e.g. state.sqlite)")
        _check_creatable_dir(Path(state).parent, "--state")
    dead_letter = settings.dead_letter
    if dead_letter and "://" not in dead_letter:
        _check_creatable_dir(Path(dead_letter), "--dead-letter")


def _check_writable_file(value: str, option: str) -> None:
    path = Path(value)
    if path.is_dir():
        raise OutputPathError(f"{option} {value}: is a directory; give a file name")
    folder = path.parent
    if not folder.is_dir():
        raise OutputPathError(f"{option} {value}: the folder {folder} does not exist; "
                              "create it or choose another path")
    if not os.access(folder, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise OutputPathError(f"{option} {value}: not writable; choose another path")


def _check_creatable_dir(folder: Path, option: str) -> None:
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise OutputPathError(f"{option} {folder}: {existing} is not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputPathError(f"{option} {folder}: {existing} is not writable; choose "
                              "another path")


_RANK = {"flag": 3, "variable": 2, "file": 1, "default": 0}


def _rank(origin: str) -> int:
    if origin.startswith("--"):
        return _RANK["flag"]
    if origin == "default":
        return _RANK["default"]
    return _RANK["file"] if " line " in origin else _RANK["variable"]


def resolve_api_key(settings: Settings, warn: Callable[[str], None]) -> str | None:
    """The key from --api-key or --api-key-file, whichever comes from the stronger place;
    a key typed on the command line gets a warning (ps shows it to every user)."""
    key, path = settings.api_key, settings.api_key_file
    if key and path:
        key_rank = _rank(settings.origin("api_key"))
        file_rank = _rank(settings.origin("api_key_file"))
        if key_rank == file_rank:
            raise SettingsError(f"give the API key once: {settings.origin('api_key')} or "
                                f"{settings.origin('api_key_file')}")
        if file_rank > key_rank:
            key = None
        else:
            path = None
    if path:
        return _read_key_file(path, "--api-key-file", warn)
    if key and settings.origin("api_key") == "--api-key":
        warn("--api-key on the command line is visible to every user of this machine (ps, "
             "shell history); set AMPLITUDE_API_KEY (or CURRENTS_EXPORT_API_KEY) or use "
             "--api-key-file PATH instead.")
    return key or None


def require_api_key(settings: Settings, warn: Callable[[str], None]) -> str:
    """The run's API key (:func:`resolve_api_key`); none is a configuration error, found
    before anything is created or read."""
    key = resolve_api_key(settings, warn)
    if not key:
        raise SettingsError(_NO_API_KEY)
    return key


_NO_API_KEY = ("no Amplitude API key: set AMPLITUDE_API_KEY or pass --api-key-file (or use "
               "--dry-run to send nothing)")


def check_amplitude(settings: Settings, api_key: str) -> ProbeAnswer:
    """The run's upload endpoint answers as Amplitude and takes the key, in seconds
    (``amplitude.probe``): before a run reads anything, so that a wrong URL, a refused key
    or an outage is exit 2 at once rather than a wait for the retry horizon."""
    if settings.amplitude_url:
        flag = settings.origin("amplitude_url")
    else:
        flag = f"--region ({settings.region})"
    return probe_upload(endpoint_url(settings.api, settings.region, settings.amplitude_url),
                        api_key, flag=flag)


def check_privacy_api(client: PrivacyClient) -> str:
    """The User Privacy API answers and takes the keys, in seconds (a listing of today's
    jobs, read only); a wrong URL or an outage is a configuration answer. Its host."""
    try:
        client.check()
    except PrivacyApiError as exc:
        raise EndpointUnreachable(
            f"{exc}: a wrong --privacy-url or --region, a network that blocks it, or an "
            "outage; nothing was submitted") from None
    return client.url


def resolve_secret_key(settings: Settings, warn: Callable[[str], None]) -> str:
    """The secret key (User Privacy API) from --secret-key-file or the variable."""
    if settings.secret_key and settings.secret_key_file:
        raise SettingsError(f"give the secret key once: {settings.origin('secret_key')} or "
                            f"{settings.origin('secret_key_file')}")
    if settings.secret_key_file:
        return _read_key_file(settings.secret_key_file, "--secret-key-file", warn)
    if settings.secret_key:
        if settings.origin("secret_key") == "--secret-key":
            warn("--secret-key on the command line is visible to every user of this machine; "
                 "set AMPLITUDE_SECRET_KEY or use --secret-key-file PATH instead.")
        return settings.secret_key
    raise SettingsError("no Amplitude secret key (the User Privacy API needs the project's "
                        "API key and secret key): set AMPLITUDE_SECRET_KEY or pass "
                        "--secret-key-file (or use --dry-run to submit nothing)")


def _read_key_file(path: str, flag: str, warn: Callable[[str], None]) -> str:
    try:
        with open(path, "rb") as file:
            mode = os.fstat(file.fileno()).st_mode
            text = file.read().decode("utf-8").strip()
    except FileNotFoundError:
        raise ConfigurationError(f"{flag} {path}: no such file") from None
    except UnicodeDecodeError:
        raise ConfigurationError(f"{flag} {path}: not UTF-8 text") from None
    except OSError as exc:
        raise ConfigurationError(f"{flag} {path}: {exc.strerror or exc}") from None
    if not text:
        raise ConfigurationError(f"{flag} {path}: the file is empty")
    if mode & 0o077:
        warn(f"{flag} {path} can be read by other users (mode {mode & 0o777:o}); "
             f"chmod 600 {path}")
    return text


def build_pacer(settings: Settings, stop: Stop, state: PaceState | None = None) -> Pacer:
    """The run's sending schedule: its share (``budget_shares``) of the budget, over
    ``state`` (shared by the run's worker processes; a new one by default)."""
    budget = RateBudget.share(settings.max_events_per_second,
                              settings.max_requests_per_second, settings.budget_shares)
    return Pacer(budget, state, pause_s=RetryPolicy().project_pause_s, stop=stop)


def build_client(
    settings: Settings, api_key: str | None, stop: Stop, stack: ExitStack,
    *, retry_horizon_s: float | None = None, pacer: Pacer | None = None,
) -> AmplitudeClient:
    """The Amplitude client of one run (closed with ``stack``), sending when ``pacer``
    (by default one of its own) says."""
    keep_large_blocks_apart()  # keeps the memory of what waits flat (support/allocator.py)
    if not api_key:
        raise SettingsError(_NO_API_KEY)
    horizon = settings.retry_horizon if retry_horizon_s is None else retry_horizon_s
    pause = settings.throttle_pause
    client = AmplitudeClient(
        endpoint_url(settings.api, settings.region, settings.amplitude_url),
        api_key,
        min_id_length=settings.min_id_length,
        retry=RetryPolicy(horizon_s=horizon),
        throttle_pause_s=THROTTLE_PAUSE_S[settings.api] if pause is None else pause,
        stop=stop,
        pacer=pacer or build_pacer(settings, stop),
    )
    stack.callback(client.close)
    return client


def open_destinations(
    settings: Settings, stack: ExitStack, *, aws: AwsCallLimits | None = None,
    check: bool = True, api_key: str | None = None,
) -> Destinations:
    """The ledger and the dead letter (closed with ``stack``).

    ``check``: see, before any work, that the ledger answers and that an s3:// dead
    letter's bucket exists. The Lambda does not: HeadBucket needs s3:ListBucket, which its
    role does not have (it only writes objects), and its first object finds out anyway.
    ``api_key``: the run's key: the ledger must deliver to this run's destination
    (:func:`check_destination`; a dry run's ledger is none). The Lambda checks per
    invocation instead (its key is read then); a worker process does not (its run checked
    before starting it)."""
    limits: dict[str, Any] = {}
    if aws is not None:
        limits = {"connect_timeout": aws.connect_timeout, "read_timeout": aws.read_timeout,
                  "max_attempts": aws.max_attempts}
    try:
        ledger: Ledger = (NoLedger() if settings.dry_run  # a dry run neither reads nor writes
                          else open_ledger(settings.state, **limits))
        s3 = None
        if settings.dead_letter.startswith("s3://"):
            s3 = s3_client(settings.s3_endpoint_url, **limits)
            if check:
                _check_bucket(s3, settings.dead_letter)
        dead_letter = open_dead_letter(settings.dead_letter, s3_client=s3,
                                       kms_key=settings.dead_letter_kms_key)
    except (LedgerConfigError, DeadLetterConfigError) as exc:
        raise SettingsError(str(exc)) from None
    stack.callback(ledger.close)
    stack.callback(dead_letter.close)
    if check:
        ledger.state("currents-export:check")  # a missing table or bad file: exit 2
    if api_key and not settings.dry_run:
        check_destination(settings, ledger, api_key)  # before any object is read
    deletions: DeletionTracker | NoDeletions = NoDeletions()
    if settings.deletions.enabled and not settings.dry_run:
        store = open_deletion_store(settings, ledger)
        stack.callback(store.close)
        deletions = DeletionTracker(store)
    return Destinations(ledger=ledger, dead_letter=dead_letter, s3=s3, deletions=deletions)


def run_destination(settings: Settings, api_key: str) -> Destination:
    """Where a run with these settings delivers: the upload URL's host, the key's
    fingerprint (``ledger.destination``)."""
    return the_destination(endpoint_url(settings.api, settings.region, settings.amplitude_url),
                           api_key)


def check_destination(
    settings: Settings, ledger: Ledger, api_key: str, *, key_only: bool = False,
    rebind: bool | None = None,
) -> Destination | None:
    """Make sure ``ledger`` delivers to this run's destination, before any object is read.

    A ledger bound to nothing (new, or from before destinations were recorded) is bound to
    this one (two first runs at once agree: the ledger's bind is a compare-and-set). A
    ledger bound elsewhere raises :class:`DestinationMismatch` naming both, unless
    ``rebind`` (default: ``settings.rebind_destination``) rebinds it: for a rotated key of
    the same project (another host too, with a warning). A run that bound the ledger and
    recorded nothing (it failed at once: a wrong key, a host that does not answer) releases
    the binding when its ledger closes. ``key_only`` (``deletions submit``, whose User
    Privacy API has its own host): only the key must match, and an unbound ledger stays
    unbound. Returns the binding in force (None: unbound, key_only)."""
    if rebind is None:
        rebind = settings.rebind_destination
    wanted = run_destination(settings, api_key)
    current = ledger.destination()
    if current is not None and key_only:
        wanted = Destination(host=current.host, key_fingerprint=wanted.key_fingerprint)
    if current is None:
        if key_only:
            return None
        current = ledger.bind_destination(wanted, replacing=None)
        if current == wanted:
            if current is not None and current.recorded:
                log.warning(
                    "ledger %s: it holds objects done before the ledger recorded where they "
                    "went; it is now bound to %s. If they were delivered elsewhere (the "
                    "emulator, another project), they are skipped here: use a new --state "
                    "for %s.", settings.state, wanted, wanted.host)
            else:
                log.info("ledger %s: bound to %s", settings.state, wanted)
            return current
        if current is None:  # unbound again: nothing to compare
            raise DestinationMismatch(f"--state {settings.state}: could not bind the ledger "
                                      f"to {wanted}; run again")
    if current == wanted:
        return current
    if not rebind:
        raise DestinationMismatch(_mismatch(settings, current, wanted))
    if current.host != wanted.host:
        log.warning(
            "ledger %s: REBOUND TO ANOTHER HOST: its objects were delivered to %s; from now "
            "on it records deliveries to %s. Objects done there are not sent here: if this "
            "is another Amplitude (not the same project at a new address), use another "
            "--state instead.", settings.state, current, wanted)
    bound = ledger.bind_destination(wanted, replacing=current)
    if bound != wanted:
        raise DestinationMismatch(
            f"--state {settings.state}: the ledger's destination changed while this run "
            f"rebound it (it is now {bound}); run again")
    log.warning("ledger %s: rebound from %s to %s (%s); objects done stay done",
                settings.state, current, wanted, _rebind_name(settings))
    return bound


def _rebind_name(settings: Settings) -> str:
    option = OPTION["rebind_destination"]
    return f"{option.variable}=true" if settings.place == LAMBDA else option.flag


def _mismatch(settings: Settings, bound: Destination, wanted: Destination) -> str:
    what = " and ".join(part for part, differs in (
        ("another host", bound.host != wanted.host),
        ("another API key", bound.key_fingerprint != wanted.key_fingerprint)) if differs)
    state = f"{settings.origin('state')} {settings.state}"
    if settings.origin("state") == "default":
        state = f"--state {settings.state} (the default)"
    another = ("another --state: a new file, or dynamodb://ANOTHER_TABLE"
               if settings.place != LAMBDA else
               f"another table in {OPTION['state'].variable}, e.g. another stack's")
    return (
        f"{state}: this ledger records deliveries to {bound}, and this run would deliver "
        f"to {wanted} ({what}). Nothing was read or sent: the objects it marks done went "
        f"to {bound.host}, and with this ledger they would be skipped here. "
        f"To deliver to {wanted.host} as a destination of its own, give it its own ledger "
        f"({another}). If it is the same Amplitude project (its API key was rotated, or it "
        f"is reached at another address), run once with {_rebind_name(settings)}: the "
        "ledger is rebound and the objects done stay done (a new key must not make the "
        "project look new: Amplitude drops a repeated insert_id for 7 days only)."
        + ("" if bound.recorded else " Nothing has been recorded under the ledger's "
           "destination yet: if no run is delivering there now (the key it was bound with "
           "was wrong, say), rebinding is safe."))


def _check_bucket(s3: Any, uri: str) -> None:
    """The dead-letter bucket must exist and be reachable before any work starts."""
    bucket = uri[len("s3://"):].partition("/")[0]
    try:
        s3.head_bucket(Bucket=bucket)
    except Exception as exc:  # turned into an answer, or re-raised
        known = explain(exc, f"--dead-letter {uri}")
        if known is None:
            code = getattr(exc, "response", {}).get("Error", {}).get("Code", "")
            if code in ("404", "NoSuchBucket"):
                raise ConfigurationError(
                    f"--dead-letter {uri}: the bucket does not exist; create it or fix the "
                    "name") from None
            raise
        raise known from None


def build_pipeline(
    settings: Settings,
    destinations: Destinations,
    stack: ExitStack,
    *,
    stop: Stop,
    api_key: str | None,
    on_object: Callable[[ObjectReport], None] | None = None,
    retry_horizon_s: float | None = None,
    pacer: Pacer | None = None,
    log_failures: bool = True,
) -> Pipeline:
    """One run's pipeline over ``destinations``: upload lanes over a new client (a dry
    run's outbox, in a dry run) and the ``--output`` file (owner-only), closed with
    ``stack``. ``pacer``: the run's sending schedule (by default one of its own).
    ``log_failures``: off when ``on_object`` logs every object (the Lambda)."""
    if settings.dry_run:
        open_outbox: OpenOutbox = DryRunOutbox
    else:
        client = build_client(settings, api_key, stop, stack, retry_horizon_s=retry_horizon_s,
                              pacer=pacer)
        sized = client.pacer.request_size() or EVENTS_PER_REQUEST  # a budget's request size
        open_outbox = lanes_over(client, REQUEST_LIMITS[settings.api], settings.lanes,
                                 events_per_request=min(sized, EVENTS_PER_REQUEST))
    output: IO[bytes] | None = None
    if settings.output:
        output = stack.enter_context(open_private_for_writing(settings.output))
    return Pipeline(
        open_outbox=open_outbox,
        ledger=destinations.ledger,
        dead_letter=destinations.dead_letter,
        stop=stop,
        dry_run=settings.dry_run,
        options=settings.mapping,
        min_id_length=settings.min_id_length,
        output=output,
        force=settings.force,
        checkpoint_every=settings.checkpoint_every,
        retry_failed=settings.retry_failed,
        on_object=on_object,
        log_failures=log_failures,
        deletions=destinations.deletions,
    )


def lanes_over(
    client: AmplitudeClient, limits: RequestLimits, lanes: int, *,
    events_per_request: int = EVENTS_PER_REQUEST, stop_on_failure: bool = False,
) -> Callable[[Sink[R]], Lanes[R]]:
    """How a run opens its upload lanes: ``lanes`` lanes sending through ``client``,
    requests of at most ``events_per_request`` events, retries until the client's
    horizon; ``stop_on_failure`` for a redrive (a failure fails the file as a whole)."""
    limits = replace(limits, max_events=min(limits.max_events, events_per_request))

    def open_lanes(sink: Sink[R]) -> Lanes[R]:
        return Lanes(client, limits, lanes=lanes, sink=sink,
                     horizon_s=client.retry.horizon_s, stop_on_failure=stop_on_failure)

    return open_lanes


def build_worker_pipeline(
    settings: Settings,
    api_key: str | None,
    verbose: int,
    pace_state: PaceState,
    stack: ExitStack,
    stop: Stop,
    on_object: Callable[[ObjectReport], None],
) -> Pipeline:
    """A worker process's run (``WorkerSpec.build``, see ``currents_export.workers``),
    sending on the schedule every worker of the run shares (``pace_state``)."""
    setup_logging(verbose)
    return build_pipeline(settings, open_destinations(settings, stack), stack, stop=stop,
                          api_key=api_key, on_object=on_object,
                          pacer=build_pacer(settings, stop, pace_state))


def open_deletion_store(settings: Settings, ledger: Ledger) -> DeletionStore:
    """The identity map and deletions, kept with ``ledger`` (closed with it)."""
    if isinstance(ledger, DynamoDbLedger):
        return DynamoDbDeletionStore(ledger.client, ledger.table,
                                     identity_ttl_days=settings.deletions.identity_ttl_days)
    if isinstance(ledger, SqliteLedger):
        return SqliteDeletionStore(ledger.path)
    raise SettingsError(f"--state {settings.state}: deletions need a SQLite or DynamoDB ledger")


def build_privacy_client(
    settings: Settings, api_key: str | None, secret_key: str, stack: ExitStack,
    *, stop: Stop,
) -> PrivacyClient:
    """The User Privacy API client (closed with ``stack``): the region's host, or
    ``privacy_url``; every retry ends at ``stop``."""
    if not api_key:
        raise SettingsError("no Amplitude API key: set AMPLITUDE_API_KEY or pass "
                            "--api-key-file (the User Privacy API needs it with the secret key)")
    client = PrivacyClient(privacy_url(settings.region, settings.privacy_url), api_key,
                           secret_key, requests_per_second=settings.deletions.requests_per_second,
                           requester=settings.deletions.requester,
                           stopped=lambda: stop.stopped)
    stack.callback(client.close)
    return client


@dataclass(frozen=True, slots=True)
class CheckResult:
    """One line of ``currents-export check``: what was checked, and what was found."""

    name: str
    ok: bool
    detail: str


def checkup(
    settings: Settings, warn: Callable[[str], None], source: str | None = None,
) -> list[CheckResult]:
    """Everything a run needs, each checked on its own in seconds, creating nothing: the
    outputs, the API key and Amplitude (``check_amplitude``), the ledger (and its
    destination), the dead letter, the source (a folder or an S3 prefix) and, with
    [deletions], the secret key and the User Privacy API."""
    results: list[CheckResult] = []

    def attempt(name: str, step: Callable[[], str]) -> bool:
        try:
            results.append(CheckResult(name, True, step()))
        except ConfigurationError as exc:
            results.append(CheckResult(name, False, str(exc)))
        except Exception as exc:  # an AWS error explained, or an unexpected one said
            known = explain(exc, name)
            results.append(CheckResult(name, False, str(known or f"{type(exc).__name__}: "
                                                                f"{exc}")))
        return results[-1].ok

    api_key: str | None = None

    def amplitude() -> str:
        nonlocal api_key
        key = require_api_key(settings, warn)
        answer = check_amplitude(settings, key)
        api_key = key
        return f"{answer.host}: {answer.detail} ({answer.elapsed_s:.1f} s)"

    def outputs() -> str:
        check_outputs(settings)
        return "writable"

    attempt("outputs", outputs)
    attempt("Amplitude", amplitude)
    attempt("ledger", lambda: _check_ledger(settings, api_key))
    attempt("dead letter", lambda: _check_dead_letter(settings))
    if source is not None:
        attempt("source", lambda: _check_source(settings, source))
    if settings.deletions.enabled:
        def privacy() -> str:
            secret = resolve_secret_key(settings, warn)
            key = api_key or require_api_key(settings, warn)
            with ExitStack() as stack:
                client = build_privacy_client(settings, key, secret, stack, stop=Stop())
                return f"{check_privacy_api(client)}: answers and takes the keys"

        attempt("User Privacy API", privacy)
    return results


def _check_ledger(settings: Settings, api_key: str | None) -> str:
    """The ledger answers and delivers where this configuration sends (read only: a ledger
    that does not exist yet is not created, an unbound one is not bound)."""
    state = settings.state
    if "://" not in state and not Path(state).exists():
        return f"{state}: not created yet (the first run creates it; its folder is writable)"
    try:
        ledger = open_ledger(state)
    except LedgerConfigError as exc:
        raise SettingsError(str(exc)) from None
    try:
        ledger.state("currents-export:check")
        bound = ledger.destination()
    finally:
        ledger.close()
    if bound is None:
        return f"{state}: answers; not bound to a destination yet (the next run binds it)"
    if api_key is not None:
        wanted = run_destination(settings, api_key)
        if bound != wanted:
            raise DestinationMismatch(_mismatch(settings, bound, wanted))
        return f"{state}: answers; delivers to {bound}, as this configuration does"
    return f"{state}: answers; bound to {bound} (not compared: no usable API key)"


def _check_dead_letter(settings: Settings) -> str:
    where = settings.dead_letter
    if where.startswith("s3://"):
        _check_bucket(s3_client(settings.s3_endpoint_url), where)
        return f"{where}: the bucket answers"
    return f"{where}: {'exists' if Path(where).is_dir() else 'created by the first run'}"


def _check_source(settings: Settings, source: str) -> str:
    """A folder's .avro files, or the first objects under an S3 prefix (a page at most)."""
    if source.startswith("s3://"):
        location = S3Location.parse(source)
        found = list(itertools.islice(list_objects(s3_client(settings.s3_endpoint_url),
                                                   location), _LISTED))
        if not found:
            raise SourceError(f"{source}: no Currents objects under this prefix; it is the "
                              "folder Braze writes into, e.g. s3://BUCKET/currents")
        more = "+" if len(found) == _LISTED else ""
        return f"{source}: {len(found)}{more} Currents objects readable (first: {found[0].uri})"
    objects = find_local_objects([source])
    if not objects:
        raise SourceError(f"{source}: no .avro files here")
    return f"{source}: {len(objects)} .avro files"


_LISTED = 1_000
