"""The ``currents-export`` command line: parse options, build the run, print the result.

The options come from one table (``currents_export.settings``): each can also be given as
``CURRENTS_EXPORT_<OPTION>`` or in the TOML file of ``--config`` (command line >
environment > file > default). Runs are built by ``currents_export.compose``.
"""

from __future__ import annotations

import errno
import itertools
import logging
import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import click
import orjson

from currents_export import __version__
from currents_export.amplitude.api import REQUEST_LIMITS
from currents_export.amplitude.pacing import Pacer, PaceState
from currents_export.aws.explain import explain
from currents_export.compose import (
    build_client,
    build_pacer,
    build_pipeline,
    build_privacy_client,
    build_worker_pipeline,
    check_amplitude,
    check_destination,
    check_outputs,
    check_privacy_api,
    checkup,
    lanes_over,
    open_deletion_store,
    open_destinations,
    require_api_key,
    resolve_secret_key,
)
from currents_export.core.redrive import Redrive
from currents_export.counts import RunSummary
from currents_export.currents.schemas import pii_fields
from currents_export.deletions.store import DeletionStore
from currents_export.deletions.submit import deletion_status, render_status, submit_deletions
from currents_export.display import LiveProgress, SnapshotProvider
from currents_export.errors import (
    EXIT_CONFIG,
    EXIT_DEAD_LETTERED,
    EXIT_INTERRUPTED_TWICE,
    EXIT_OK,
    EXIT_UNFINISHED,
    ConfigurationError,
    CurrentsExportError,
    DeadLetterConfigError,
    LedgerConfigError,
    ObjectError,
    SettingsError,
    SourceError,
    StatusError,
)
from currents_export.ledger import open_ledger
from currents_export.mapping import Mapped, MappingOptions, mapped_records, mapper_for
from currents_export.settings import (
    BACKFILL,
    CHECK,
    CONFIG_VARIABLE,
    DELETIONS,
    DELETIONS_STATUS,
    INSPECT,
    REDRIVE,
    REPLAY,
    STATUS,
    Option,
    Settings,
    load_settings,
    options_for,
)
from currents_export.sources import SourceObject, find_local_objects
from currents_export.sources.backfill import (
    dispatch_to_sqs,
    parse_hour,
    queue_url,
    write_manifest,
)
from currents_export.sources.s3 import (
    KeyFilter,
    S3Location,
    list_objects,
    object_or_prefix,
    s3_client,
)
from currents_export.stopping import Stop
from currents_export.support.logs import setup_logging
from currents_export.support.privatefiles import open_private_for_writing
from currents_export.support.redact import printable, shown
from currents_export.workers import WorkerPool, WorkerSpec, default_workers

log = logging.getLogger("currents_export")
Command = Callable[..., Any]


def _settings_options(place: str) -> Callable[[Command], Command]:
    """The options of ``place`` from the one table (``currents_export.settings``), plus
    ``--config``. No click defaults or variables: ``load_settings`` resolves those, the same
    way for every command and for the Lambda."""

    def decorate(command: Command) -> Command:
        for option in reversed(options_for(place)):
            command = _click_option(option)(command)
        return click.option(
            "--config", type=click.Path(dir_okay=False), metavar="PATH",
            help=f"TOML file with option values (keys as option names, e.g. lanes = 4) and "
                 f"the [mapping] table (docs/mapping.md). Variable: {CONFIG_VARIABLE}.",
        )(command)

    return decorate


def _click_option(option: Option) -> Callable[[Command], Command]:
    variables = " or ".join(option.variables)
    text = f"{option.help} Variable: {variables}."
    if option.default is not None or option.default_text is not None:
        text += f" Default: {option.describe_default()}."
    if option.kind is bool:
        return click.option(option.flag, is_flag=True, default=None, help=text)
    kind: click.ParamType[Any]
    if option.choices:
        kind = click.Choice(option.choices)
    elif option.kind is int:
        kind = click.IntRange(_bound(option.minimum), _bound(option.maximum))
    elif option.kind is float:
        kind = click.FloatRange(option.minimum, option.maximum)
    else:
        kind = click.STRING
    return click.option(option.flag, type=kind, default=None, metavar=option.metavar,
                        help=text)


def _bound(value: float | None) -> int | None:
    return None if value is None else int(value)


def _settings(place: str, params: dict[str, Any]) -> Settings:
    """The command's settings: the flags given on this command line over the environment,
    the --config file and the defaults."""
    ctx = click.get_current_context()
    given = {name: value for name, value in params.items()
             if ctx.get_parameter_source(name) is click.core.ParameterSource.COMMANDLINE}
    return load_settings(place, flags=given, environ=os.environ)


def _warn(message: str) -> None:
    click.echo(f"Warning: {message}", err=True)


def _progress_option() -> Callable[[Command], Command]:
    def decorate(command: Command) -> Command:
        command = click.option(
            "--no-progress", "no_progress", is_flag=True, default=False,
            help="No live display, even on a terminal.")(command)
        return click.option(
            "--progress", type=click.Choice(["text", "json"]), is_flag=False,
            flag_value="text", default=None, metavar="[text|json]",
            help="A live display on stderr (events/s, objects, delivered, skipped, "
                 "dead-lettered, ETA): one line rewritten every second on a terminal, a "
                 "line every 30 s elsewhere; `--progress json`: a JSON object per line "
                 "instead, for programs. Default: text when stderr is a terminal. Give it "
                 "after the paths (or as --progress=json).")(command)

    return decorate


def _verbose_option() -> Callable[[Command], Command]:
    return click.option("-v", "--verbose", count=True, help="More log output (-v, -vv).")


def _effective_workers(settings: Settings) -> int:
    """--workers, or its default; --output (one file) takes one process."""
    if settings.workers is None:
        return 1 if settings.output else default_workers()
    if settings.workers > 1 and settings.output:
        raise SettingsError(
            f"--output writes one file from one process: with {settings.origin('workers')} "
            f"{settings.workers} the workers' lines would interleave; use --workers 1 with "
            "--output")
    return settings.workers


def _live_progress(command: str, progress: str | None, no_progress: bool
                   ) -> LiveProgress | None:
    """The live display on stderr, or None: --progress [text|json] / --no-progress, else a
    terminal's."""
    stream = sys.stderr
    if progress is not None and no_progress:
        raise click.UsageError("--progress and --no-progress: give one")
    if no_progress or (progress is None and not stream.isatty()):
        return None
    return LiveProgress(command, stream, as_json=progress == "json")


class _Answers(click.Group):
    """Every failure is an answer: one message naming what to fix and the documented exit
    status, never a traceback (except with -vv)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except ConfigurationError as exc:
            _fail(str(exc), EXIT_CONFIG)
        except CurrentsExportError as exc:
            _fail(str(exc), EXIT_UNFINISHED)
        except Exception as exc:  # the last line of defence
            known = explain(exc, "AWS")
            if known is not None:
                _fail(str(known), EXIT_CONFIG)
            if isinstance(exc, OSError) and exc.filename:
                _fail(f"{exc.filename}: {exc.strerror or exc}", EXIT_CONFIG)
            _fail(f"unexpected {type(exc).__name__}: {exc} (this is a bug in "
                  "currents-export; -vv shows the traceback)", EXIT_UNFINISHED)


def _fail(message: str, status: int) -> None:
    log.debug("the error in full", exc_info=True)
    click.echo(f"Error: {shown(message)}", err=True)
    sys.exit(status)


@click.group(cls=_Answers,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="currents-export")
def main() -> None:
    """Move Braze Currents (Avro files) into Amplitude."""


@main.command(short_help="Replay local Avro files or folders into Amplitude.")
@click.argument("paths", nargs=-1, required=True)
@_settings_options(REPLAY)
@_progress_option()
@_verbose_option()
def replay(paths: tuple[str, ...], progress: str | None, no_progress: bool, verbose: int,
           **params: Any) -> None:
    """Replay Avro files or directories (searched recursively for .avro) into Amplitude."""
    setup_logging(verbose)
    remote = [path for path in paths if "://" in path]
    if remote:
        raise click.UsageError(
            f"{remote[0]}: replay reads local files; for S3 use "
            f"`currents-export backfill {remote[0]}` (or copy the objects here first)")
    settings = _settings(REPLAY, params)
    count = _effective_workers(settings)
    try:
        objects = find_local_objects(paths)
    except SourceError as exc:
        raise click.UsageError(shown(str(exc))) from None
    if not objects:
        raise click.UsageError(f"no .avro files under {', '.join(map(printable, paths))}; "
                               "give the folder "
                               "Braze writes into (…/currents/…) or .avro files")
    live = _live_progress("replay", progress, no_progress)
    if live is not None:
        live.set_totals(len(objects), (source.size for source in objects))
    summary = run_objects(objects, settings, workers=min(count, len(objects)), progress=live,
                           verbose=verbose)
    _finish(summary, settings)


def run_objects(
    objects: Iterable[SourceObject],
    settings: Settings,
    *,
    workers: int = 1,
    progress: LiveProgress | None = None,
    verbose: int = 0,
) -> RunSummary:
    """Build the run from the settings and run it over ``objects``: in this process, or
    over ``workers`` worker processes (``currents_export.workers``).

    The first SIGINT/SIGTERM stops reading, saves progress and returns the summary; a
    second one exits at once. ``progress`` shows the pipelines' snapshots while they run
    and writes its last line before this returns (before the summary).
    """
    api_key = _ready_to_send(settings)
    stop = Stop()
    if workers > 1:
        return _run_in_processes(objects, settings, api_key, workers, stop, progress, verbose)
    pacer = build_pacer(settings, stop)
    last_words = _LastWords(settings)
    with ExitStack() as stack, _stop_on_signals(stop, last_words=last_words):
        # The ledger must deliver where this run sends (before any object is read).
        destinations = open_destinations(settings, stack, api_key=api_key)
        pipeline = build_pipeline(settings, destinations, stack, stop=stop, api_key=api_key,
                                  pacer=pacer)
        last_words.source = pipeline.summary_so_far
        return _watched(pipeline.run, objects, pacer, settings, progress, stack, pipeline)
    raise AssertionError("unreachable")


def _ready_to_send(settings: Settings) -> str | None:
    """Before anything is created or read: the outputs can be written, there is a key, and
    Amplitude answers and takes it (a wrong URL, a refused key or an outage is exit 2 in
    seconds; ``--summary-json`` still says why). The key; None in a dry run."""
    check_outputs(settings)
    if settings.dry_run:
        return None
    try:
        api_key = require_api_key(settings, _warn)
        answer = check_amplitude(settings, api_key)
    except ConfigurationError as exc:
        _write_json(settings, RunSummary(configuration_error=str(exc)).to_json())
        raise
    log.info("%s %s (%.1f s)", answer.host, answer.detail, answer.elapsed_s)
    return api_key


def _watched(
    run: Callable[[Iterable[SourceObject]], RunSummary],
    objects: Iterable[SourceObject],
    pacer: Pacer,
    settings: Settings,
    progress: LiveProgress | None,
    stack: ExitStack,
    provider: SnapshotProvider | None = None,
) -> RunSummary:
    """Run with the display on (if any), showing the sending too; the summary says what
    sending met (a run that sends)."""
    sending = None if settings.dry_run else pacer.report
    if progress is not None:
        if provider is not None:
            progress.add(provider)
        if sending is not None:
            progress.watch_sending(sending)
        stack.enter_context(progress)
    summary = run(objects)
    if sending is not None:
        summary.sending = sending()
    return summary


def _run_in_processes(
    objects: Iterable[SourceObject],
    settings: Settings,
    api_key: str | None,
    workers: int,
    stop: Stop,
    progress: LiveProgress | None,
    verbose: int,
) -> RunSummary:
    """Check the set-up here, before any work, and run the worker processes (each builds
    its run from the same settings; the key travels separately, never in a repr). They
    send on one schedule (one budget), kept in a private folder of this run."""
    worker_settings = settings.without("api_key", "api_key_file", "summary_json")
    with ExitStack() as stack:
        folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="currents-export-"))
        pace_state = PaceState.shared(Path(folder))
        spec = WorkerSpec(build_worker_pipeline, (worker_settings, api_key, verbose, pace_state),
                          s3_endpoint_url=settings.s3_endpoint_url)
        run = WorkerPool(spec, workers=workers, stop=stop, dry_run=settings.dry_run,
                         progress=progress)
        last_words = _LastWords(settings)
        last_words.source = run.summary_so_far
        stack.enter_context(_stop_on_signals(stop, on_exit=run.kill, last_words=last_words))
        # Built here once, so that a bad set-up (a ledger bound to another destination
        # too) is an answer before any worker starts; the ledger frees the leases of a
        # worker that dies.
        checked = open_destinations(settings, stack, api_key=api_key)
        pacer = build_pacer(settings, stop, pace_state)
        build_pipeline(settings, checked, stack, stop=stop, api_key=api_key, pacer=pacer)
        run.ledger = checked.ledger
        return _watched(run.run, objects, pacer, settings, progress, stack)
    raise AssertionError("unreachable")


class _LastWords:
    """What a second Ctrl-C writes on its way out: the summary of the objects finished so
    far (text and ``--summary-json``), the others not finished (their progress up to the
    last checkpoint is saved)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.source: Callable[[], RunSummary] | None = None  # set once the run is built
        self.started = time.monotonic()

    def __call__(self) -> None:
        if self.source is None:
            return
        summary = self.source()
        summary.elapsed_s = time.monotonic() - self.started
        summary.interrupted = True
        summary.stopped_by = ("interrupted twice: the run exited at once (objects in flight "
                              "resume from their last checkpoint)")
        sys.stdout.write(summary.render() + "\n")
        sys.stdout.flush()
        _write_json(self.settings, summary.to_json())


@contextmanager
def _stop_on_signals(
    stop: Stop, on_exit: Callable[[], None] | None = None,
    last_words: Callable[[], None] | None = None,
) -> Iterator[None]:
    """SIGINT/SIGTERM: the first asks the run to stop cleanly, a second exits at once
    (after ``on_exit``: e.g. killing the worker processes; then ``last_words``: the
    summary so far)."""

    def handle(signum: int, _frame: object) -> None:
        if stop.requested:
            os.write(2, b"\ninterrupted again: exiting now\n")
            if on_exit is not None:
                on_exit()
            if last_words is not None:
                try:
                    last_words()
                except Exception as exc:  # exiting anyway: say why there is no summary
                    os.write(2, f"could not write the summary: {exc}\n".encode())
            os._exit(EXIT_INTERRUPTED_TWICE)
        stop.request(f"interrupted by {signal.Signals(signum).name}")
        os.write(2, b"\nstopping: saving progress and writing the summary "
                    b"(press Ctrl-C again to quit at once)\n")

    try:
        previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:  # not the main thread (e.g. embedded): no signal handling
        yield
        return
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _finish(summary: RunSummary, settings: Settings) -> None:
    """Print and write the summary (always), then exit with the documented status."""
    click.echo(summary.render())
    _write_json(settings, summary.to_json())
    if summary.configuration_error:
        click.echo(f"Error: {shown(summary.configuration_error)}. Nothing more was marked done.",
                   err=True)
        sys.exit(EXIT_CONFIG)
    failed = summary.objects_failed or summary.objects_unfinished or summary.interrupted
    if failed:
        sys.exit(EXIT_UNFINISHED)
    if settings.fail_on_dead_letter and summary.dead_lettered_total:
        click.echo(f"Error: {summary.dead_lettered_total} events were dead-lettered "
                   "(--fail-on-dead-letter); see the dead letter, then `currents-export "
                   "redrive` what can be sent again", err=True)
        sys.exit(EXIT_DEAD_LETTERED)
    sys.exit(EXIT_OK)


@main.command(short_help="Check the set-up in seconds: Amplitude, the ledger, S3.")
@click.argument("source", required=False, metavar="[DIR|s3://BUCKET/PREFIX]")
@_settings_options(CHECK)
@_verbose_option()
def check(source: str | None, verbose: int, **params: Any) -> None:
    """Check what a run would use, creating nothing and sending nothing that Amplitude
    stores: every option (flags, variables, the config file), the API key and Amplitude
    (one event it must refuse: it answers as Amplitude and takes the key), the ledger and
    the destination it records, the dead letter, SOURCE if given (a folder, or the objects
    under an S3 prefix) and, with [deletions], the User Privacy API. Exit 0 when all is well,
    2 with what to fix."""
    setup_logging(verbose)
    settings = _settings(CHECK, params)
    origins = sorted({settings.origin(name).split(" line ")[0] for name in settings.origins})
    click.echo(f"ok    settings: {len(settings.origins)} options set"
               + (f" ({', '.join(origins)})" if origins else " (all defaults)")
               + (f"; config file {settings.config}" if settings.config else ""))
    results = checkup(settings, _warn, source)
    for result in results:
        click.echo(f"{'ok' if result.ok else 'FAIL':<5} {result.name}: {shown(result.detail)}")
    failed = [result.name for result in results if not result.ok]
    if failed:
        click.echo(f"Error: {', '.join(failed)}: see above; fix them and run check again "
                   "(nothing was read, created or stored)", err=True)
        sys.exit(EXIT_CONFIG)
    click.echo("ready: a run with this configuration can start")


@main.command(short_help="Process (or dispatch) the objects under an S3 prefix; resumable.")
@click.argument("uri", metavar="s3://BUCKET/PREFIX")
@click.option("--since", help="First queue hour (UTC), YYYY-MM-DD or YYYY-MM-DD-HH "
                               "(the date= folder: pad it, events queue late).")
@click.option("--until", help="Last queue hour (UTC), inclusive; a day means its last hour.")
@click.option("--event-type", "event_types", multiple=True,
              help="Only this Currents event type (repeatable), e.g. "
                   "users.behaviors.CustomEvent.")
@click.option("--dispatch", metavar="sqs://QUEUE_URL",
              help="Enqueue one message per object for the Lambda fleet instead of "
                   "processing here.")
@click.option("--manifest", type=click.Path(dir_okay=False, writable=True), metavar="PATH",
              help="Write an S3 Batch Operations CSV manifest instead of processing here.")
@_settings_options(BACKFILL)
@_progress_option()
@_verbose_option()
def backfill(
    uri: str,
    since: str | None,
    until: str | None,
    event_types: tuple[str, ...],
    dispatch: str | None,
    manifest: str | None,
    progress: str | None,
    no_progress: bool,
    verbose: int,
    **params: Any,
) -> None:
    """Process (or dispatch) the Currents objects under s3://BUCKET/PREFIX; resumable."""
    setup_logging(verbose)
    settings = _settings(BACKFILL, params)
    try:
        location = S3Location.parse(uri)
        key_filter = KeyFilter(parse_hour(since), parse_hour(until, end=True),
                               frozenset(event_types))
        url = queue_url(dispatch) if dispatch else None
    except (SourceError, ValueError) as exc:
        raise click.UsageError(shown(str(exc))) from None
    client = s3_client(settings.s3_endpoint_url)
    try:
        objects = _not_empty(list_objects(client, location, key_filter), uri, key_filter)
        if url is not None:
            import boto3

            sent = dispatch_to_sqs(boto3.client("sqs"), url, location.bucket, objects)
            click.echo(f"dispatched {sent} objects to {url}")
            return
        if manifest is not None:
            with Path(manifest).open("w", encoding="utf-8") as out:
                count = write_manifest(out, location.bucket, objects)
            click.echo(f"wrote {count} objects to the manifest {manifest} "
                       "(format S3BatchOperations_CSV_20180820, fields Bucket, Key)")
            return
        count = _effective_workers(settings)
        live = _live_progress("backfill", progress, no_progress)
        if live is not None:  # the listing is lazy: the total is known once it ends
            objects = live.counting(objects)
        summary = run_objects(objects, settings, workers=count, progress=live,
                               verbose=verbose)
    except SourceError as exc:
        click.echo(f"Error: {shown(str(exc))}", err=True)
        sys.exit(EXIT_CONFIG)
    _finish(summary, settings)


def _not_empty(
    objects: Iterator[SourceObject], uri: str, key_filter: KeyFilter
) -> Iterator[SourceObject]:
    """``objects``, or exit 2 with a hint when the listing finds none (checked on the
    first one; the listing stays lazy)."""
    first = next(objects, None)
    if first is None:
        filters = [f"--since {key_filter.since}" if key_filter.since else "",
                   f"--until {key_filter.until}" if key_filter.until else "",
                   *(f"--event-type {name}" for name in sorted(key_filter.event_types))]
        given = " ".join(f for f in filters if f)
        hint = (f"no Currents objects under {uri} match {given}; check the filters (queue "
                "hours are UTC)" if given else
                f"no Currents objects under {uri}; the prefix is the folder Braze writes "
                "into, e.g. s3://BUCKET/currents (see `aws s3 ls`)")
        raise click.UsageError(hint)
    return itertools.chain([first], objects)


@main.command(short_help="Re-send dead-lettered events.")
@click.argument("dead_letter", metavar="DIR|s3://BUCKET/PREFIX")
@click.option("--reason", "reasons", multiple=True,
              help="Only lines with this reason (repeatable); default: all.")
@_settings_options(REDRIVE)
@_verbose_option()
def redrive(dead_letter: str, reasons: tuple[str, ...], verbose: int, **params: Any) -> None:
    """Re-send dead-lettered events from DEAD_LETTER (a directory or s3://BUCKET/PREFIX);
    what gets delivered leaves the dead letter, what stays keeps its latest reason."""
    from currents_export.deadletter import open_dead_letter_store

    setup_logging(verbose)
    settings = _settings(REDRIVE, params)
    try:
        store = open_dead_letter_store(
            dead_letter,
            s3_client=(s3_client(settings.s3_endpoint_url) if dead_letter.startswith("s3://")
                       else None),
            kms_key=settings.dead_letter_kms_key,
        )
    except DeadLetterConfigError as exc:
        raise click.UsageError(f"dead letter {shown(str(exc))}") from None
    store.names()  # the dead letter can be listed (a missing bucket: exit 2), then Amplitude
    api_key = _ready_to_send(settings)
    stop = Stop()
    with ExitStack() as stack, _stop_on_signals(stop):
        client = build_client(settings, api_key, stop, stack)
        limits = REQUEST_LIMITS[settings.api]
        redrive_run = Redrive(
            lanes_over(client, limits, settings.lanes, events_per_request=limits.max_events,
                       stop_on_failure=True),
            settings.min_id_length, reasons=frozenset(reasons),
        )
        try:
            summary = redrive_run.run(store)
            summary.sending = client.pacer.report()
        except ConfigurationError as exc:
            click.echo(f"Error: {shown(str(exc))}. The redrive stopped: dead-letter files it "
                       "had finished were rewritten without what was delivered (see the "
                       "redrive log); the file it was on and the ones after it were not "
                       "changed. Run it again once this is fixed.", err=True)
            sys.exit(EXIT_CONFIG)
    _finish(summary, settings)


@main.command("status", short_help="What the ledger knows: objects done, in progress, failed.")
@_settings_options(STATUS)
@click.option("--all", "show_all", is_flag=True, help="List the objects that are done too.")
@click.option("--wide", is_flag=True,
              help="Whole keys, where each object was last read from and longer reasons, "
                   "however long the lines (default: one line per object that fits the "
                   "terminal, or 100 columns).")
@click.option("--json", "as_json", is_flag=True,
              help="Print JSON instead of a table (every field, whole).")
def status_command(show_all: bool, wide: bool, as_json: bool, **params: Any) -> None:
    """What the ledger knows: how many objects are done, in progress and failed, and for
    each object not done why and since when (--wide: also where it was last read from)."""
    import shutil

    from currents_export.ledger.status import (
        DEFAULT_WIDTH,
        read_ledger,
        render_json,
        render_text,
    )

    state = _settings(STATUS, params).state
    try:
        states, destination = read_ledger(state)
    except StatusError as exc:
        click.echo(f"Error: {shown(str(exc))}", err=True)
        sys.exit(EXIT_CONFIG)
    if as_json:
        report = render_json(states, source=state, show_all=show_all,
                             destination=destination)
        click.echo(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
    else:
        width = (shutil.get_terminal_size((DEFAULT_WIDTH, 24)).columns if sys.stdout.isatty()
                 else DEFAULT_WIDTH)
        click.echo(render_text(states, source=state, show_all=show_all,
                               destination=destination, wide=wide, width=width))


@main.group(short_help="Submit Braze deletions to Amplitude; show what became of them.")
def deletions() -> None:
    """Braze users.UserDeleteRequest → Amplitude User Privacy API (README: "Deletions").

    Runs record delete requests and learn which Amplitude user ids each Braze id had when
    the --config file has a [deletions] table; `submit` sends the due ones, `status` shows
    them all."""


@deletions.command("submit", short_help="Resolve the due deletions and submit them.")
@_settings_options(DELETIONS)
@click.option("--grace-period", type=click.FloatRange(0), metavar="SECONDS",
              help="Submit deletions recorded at least this long ago (overrides [deletions] "
                   "grace_period_s; default 3600: events queued in the same hour first).")
@_verbose_option()
def deletions_submit(grace_period: float | None, verbose: int, **params: Any) -> None:
    """Resolve each due deletion to the Amplitude user ids its Braze id was sent with and
    submit them (100 per request, one request a second); --dry-run lists them instead."""
    setup_logging(verbose)
    settings = _deletions_settings(params)
    grace = settings.deletions.grace_period_s if grace_period is None else grace_period
    stop = Stop()
    with ExitStack() as stack, _stop_on_signals(stop):
        api_key, deleter = None, None
        if not settings.dry_run:  # both keys, and the API answering, before any work
            api_key = require_api_key(settings, _warn)
            deleter = build_privacy_client(settings, api_key,
                                           resolve_secret_key(settings, _warn), stack,
                                           stop=stop)
            check_privacy_api(deleter)
        # The same project as the runs that recorded them: the ledger's key (checked first).
        store = _deletion_store(settings, stack, api_key=api_key)
        report = submit_deletions(store, deleter, grace_s=grace, now=time.time(),
                                  stopped=lambda: stop.stopped)
    click.echo(report.render())
    _write_json(settings, {"deletions": report.to_json()})
    sys.exit(EXIT_UNFINISHED if report.error else EXIT_OK)


@deletions.command("status", short_help="Deletions recorded, submitted and unresolved.")
@_settings_options(DELETIONS_STATUS)
@click.option("--all", "show_all", is_flag=True, help="List the submitted deletions too.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def deletions_status(show_all: bool, as_json: bool, **params: Any) -> None:
    """Every deletion recorded: pending (and since when), submitted (the Amplitude job's
    day and status), unresolved (and why). Reads the ledger (--state) only."""
    settings = _settings(DELETIONS_STATUS, params)
    if not settings.deletions.enabled:
        raise SettingsError("deletions are off: add a [deletions] table to the --config file "
                            "(see the README's Deletions section)")
    with ExitStack() as stack:
        found = list(_deletion_store(settings, stack).deletions())
    status = deletion_status(found, grace_s=settings.deletions.grace_period_s,
                             now=time.time(), show_all=show_all)
    click.echo(orjson.dumps(status, option=orjson.OPT_INDENT_2).decode() if as_json
               else render_status(status))


def _deletions_settings(params: dict[str, Any]) -> Settings:
    settings = _settings(DELETIONS, params)
    if not settings.deletions.enabled:
        raise SettingsError("deletions are off: add a [deletions] table to the --config file "
                            "(see the README's Deletions section)")
    return settings


def _deletion_store(
    settings: Settings, stack: ExitStack, *, api_key: str | None = None
) -> DeletionStore:
    """The runs' deletions, in their ledger; with ``api_key`` (a submit), the ledger must
    be bound to that key (the User Privacy API has its own host: only the key is compared)."""
    if "://" not in settings.state and not Path(settings.state).is_file():
        raise SettingsError(f"{settings.origin('state')} {settings.state}: no ledger there; "
                            "give the --state the runs use")
    try:
        ledger = open_ledger(settings.state)
    except LedgerConfigError as exc:
        raise SettingsError(str(exc)) from None
    stack.callback(ledger.close)
    if api_key:
        check_destination(settings, ledger, api_key, key_only=True)
    store = open_deletion_store(settings, ledger)
    stack.callback(store.close)
    return store


def _write_private_json(path: str | Path, data: dict[str, Any]) -> None:
    with open_private_for_writing(path) as out:
        out.write(orjson.dumps(data, option=orjson.OPT_INDENT_2))


def _write_json(settings: Settings, data: dict[str, Any]) -> None:
    """Write ``--summary-json`` (owner-only, whatever the umask: it names objects and
    errors); a failure is said, never raised."""
    if settings.summary_json:
        try:
            _write_private_json(settings.summary_json, data)
        except OSError as exc:
            click.echo(f"Error: --summary-json {settings.summary_json}: "
                       f"{exc.strerror or exc}", err=True)


@main.command(short_help="Show a file's schema, mapping and mapped samples.")
@click.argument("target", metavar="FILE|DIR|s3://BUCKET/KEY_OR_PREFIX")
@_settings_options(INSPECT)
@click.option("--samples", type=click.IntRange(0), default=3, show_default=True,
              help="How many mapped events to show per file.")
def inspect(target: str, samples: int, **params: Any) -> None:
    """Show a file's (or an s3:// object's) schema, records, the mapping that applies to it
    (under --config) and mapped samples. A folder or an s3:// prefix: every .avro file
    under it, one report each (a JSON list)."""
    settings = _settings(INSPECT, params)
    single = not Path(target).is_dir()
    try:
        if target.startswith("s3://"):
            sources, single = object_or_prefix(s3_client(settings.s3_endpoint_url), target)
        else:
            sources = find_local_objects([target])
    except (SourceError, ValueError) as exc:
        raise click.UsageError(shown(str(exc))) from None
    if not sources:
        raise click.UsageError(f"{target}: no .avro files there; give an .avro file, a "
                               "folder holding some, or s3://BUCKET/KEY_OR_PREFIX")
    reports = []
    for source in sources:
        try:
            reports.append(_inspect(source, settings.mapping, samples))
        except (ObjectError, OSError) as exc:
            click.echo(f"Error: {shown(str(exc))}", err=True)
            sys.exit(EXIT_UNFINISHED)
    answer: Any = reports[0] if len(reports) == 1 and single else reports
    click.echo(orjson.dumps(answer, option=orjson.OPT_INDENT_2).decode())


def _routes(
    event_type: str, options: MappingOptions, schema: dict[str, Any]
) -> list[tuple[str, bool, str]]:
    """Where each field of the file's own schema goes (fields Braze added since are shown
    too, as the mapper treats them)."""
    mapper = mapper_for(event_type, options)
    personal = pii_fields()
    return [(f["name"], f["name"] in personal, mapper.destination(f["name"]))
            for f in schema.get("fields", [])]


def _inspect(source: SourceObject, options: MappingOptions, samples: int) -> dict[str, Any]:
    from currents_export.currents.schemas import field_class
    from currents_export.mapping.pii import schema_outline

    with source.open() as fileobj:
        stream = mapped_records(fileobj, source.uri, options, source.key_event_type)
        records = 0
        mapped: list[dict[str, Any]] = []
        outcomes: dict[str, int] = {}
        for _index, _record, result in stream:
            records += 1
            outcome = "mapped" if isinstance(result, Mapped) else result.reason
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
            if isinstance(result, Mapped) and len(mapped) < samples:
                mapped.append(result.event)
    return {
        "object": source.uri,
        "event_type": stream.event_type,
        "key_event_type": stream.key_event_type,
        "schema_event_type": stream.schema_event_type,
        "codec": stream.codec,
        "records": records,
        "outcomes": outcomes,
        "mapping": {
            "event_type": stream.mapper.amplitude_event_type,
            "fields": [
                {"field": name, "pii": pii, "class": field_class(name), "goes_to": where}
                for name, pii, where in _routes(stream.event_type, options, stream.writer_schema)
            ],
        },
        # structure only: docs and defaults could hold sample data
        "writer_schema": schema_outline(stream.writer_schema),
        "sample_events": mapped,  # mapped events: under the privacy policy
    }


@main.command(short_help="Write synthetic Currents files (all 94 types).")
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.option("--events", type=click.IntRange(1), default=200, show_default=True,
              help="Records per event type (duplicates included).")
@click.option("--event-type", "event_types", multiple=True,
              help="Only this event type (repeatable); default all 94.")
@click.option("--codec", type=click.Choice(["null", "deflate"]), default="null",
              show_default=True, help="Avro block compression (Braze writes null).")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Random seed: the same seed writes the same files.")
@click.option("--files-per-type", type=click.IntRange(1), default=2, show_default=True,
              help="Files per event type, each in the next queue hour (records are spread "
                   "evenly over them); more when --events needs them: a file holds at most "
                   "--max-events-per-file records (e.g. --events 100000: 7 files).")
@click.option("--max-events-per-file", type=click.IntRange(1), default=15_000,
              show_default=True,
              help="Records a file holds at most: Braze closes a Currents file at 15,000 "
                   "events (or after 5 minutes; up to 100,000 under load).")
def fixtures(
    out_dir: str, events: int, event_types: tuple[str, ...], codec: str, seed: int,
    files_per_type: int, max_events_per_file: int,
) -> None:
    """Write realistic synthetic Currents files, laid out as Braze lays them out in S3: for
    each event type, --events records over --files-per-type files or more (at most
    --max-events-per-file records each), one queue hour after another."""
    from currents_export.kit.fixtures import generate_fixtures

    try:
        files = generate_fixtures(
            Path(out_dir), events_per_type=events, event_types=event_types or None,
            codec=codec, seed=seed, files_per_type=files_per_type,
            max_events_per_file=max_events_per_file,
        )
    except ValueError as exc:
        raise click.UsageError(shown(str(exc))) from None
    types = {f.event_type for f in files}
    records = sum(f.records for f in files)
    duplicates = sum(f.duplicates for f in files)
    click.echo(
        f"wrote {len(files)} files, {records} records ({duplicates} duplicates) "
        f"for {len(types)} event types under {out_dir}"
    )
    most = max((len([f for f in files if f.event_type == t]) for t in types), default=0)
    if most > files_per_type:
        click.echo(f"({most} files per type, not --files-per-type {files_per_type}: a file "
                   f"holds at most --max-events-per-file {max_events_per_file:,} records)")


@main.command(short_help="Run the local Amplitude emulator.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (keep it local: it accepts any key by default).")
@click.option("--port", type=click.IntRange(0, 65535), default=8787, show_default=True,
              help="Port to listen on (0 picks a free one).")
@click.option("--api-key", "api_keys", multiple=True,
              help="Accept only this API key (repeatable); default: any key.")
@click.option("--latency-ms", type=click.IntRange(0, 60_000), default=0, show_default=True,
              help="Delay before every answer, in milliseconds (a real network's 100-300).")
@click.option("--allow-host", "allowed_hosts", multiple=True,
              help="Also answer requests addressed to this host name (repeatable, e.g. "
                   "host.docker.internal); a Host other than 127.0.0.1, localhost, [::1], "
                   "--host (any IP with 0.0.0.0) or these gets a 403.")
def emulator(
    host: str, port: int, api_keys: tuple[str, ...], latency_ms: int,
    allowed_hosts: tuple[str, ...],
) -> None:
    """Run the local Amplitude emulator (for trying a set-up without sending data)."""
    from currents_export.kit.emulator import Emulator, EmulatorConfig

    config = EmulatorConfig(valid_api_keys=frozenset(api_keys) or None, latency_ms=latency_ms)
    try:
        server = Emulator(config, host=host, port=port, allowed_hosts=allowed_hosts)
    except OSError as exc:
        problem = "is in use" if exc.errno == errno.EADDRINUSE else f"cannot be used ({exc})"
        raise ConfigurationError(
            f"--port {port}: {host}:{port} {problem}; pass another --port (0 picks a free one)"
        ) from None
    click.echo(f"Amplitude emulator listening on {server.url}  (inspect: {server.url}"
               "/_emulator/events); Ctrl-C to stop")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        server.stop()


@main.command(short_help="Fixtures → local emulator → replay → summary, on this machine.")
@click.option("--events", type=click.IntRange(1), default=200, show_default=True,
              help="Records per event type.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Random seed of the fixtures.")
@click.option("--workdir", type=click.Path(file_okay=False),
              help="Keep fixtures, ledger and dead letter here (default: a temporary dir).")
@click.option("--summary-json", type=click.Path(dir_okay=False, writable=True),
              help="Write the run summary as JSON to this file.")
def demo(events: int, seed: int, workdir: str | None, summary_json: str | None) -> None:
    """Fixtures for all 94 types → local emulator → replay → summary, on this machine only."""
    from currents_export.kit.emulator import Emulator
    from currents_export.kit.fixtures import generate_fixtures

    setup_logging(0)
    with _workdir(workdir) as root, Emulator() as server:
        files = generate_fixtures(root / "bucket", events_per_type=events, seed=seed)
        click.echo(f"1. fixtures: {len(files)} files, {sum(f.records for f in files)} records "
                   f"for {len({f.event_type for f in files})} event types in {root / 'bucket'}")
        click.echo(f"2. emulator: {server.url}")
        click.echo("3. replay:")
        # The replay command's own settings, with the demo's endpoint, key and paths.
        settings = load_settings(REPLAY, environ={"AMPLITUDE_API_KEY": "demo-api-key"}, flags={
            "amplitude_url": server.url,
            # The emulator listens on a new port each time: a --workdir's ledger follows it.
            "rebind_destination": True,
            "state": str(root / "state.sqlite"), "dead_letter": str(root / "dead-letter"),
            "retry_horizon": 60.0})
        summary = run_objects(find_local_objects([root / "bucket"]), settings)
        stored = len(server.events())
        click.echo(summary.render())
        click.echo(f"\nthe emulator stored {stored} events; the summary says "
                   f"{summary.delivered} delivered; invariant holds: {summary.balanced}")
        _explain_skipped(summary)
        if summary_json:
            _write_private_json(summary_json, summary.to_json())
        ok = summary.balanced and stored == summary.delivered and not summary.objects_failed
    sys.exit(EXIT_OK if ok else EXIT_UNFINISHED)


def _explain_skipped(summary: RunSummary) -> None:
    """Why some types sent nothing: Amplitude needs a user_id or a device_id."""
    whole = sorted(name for name, totals in summary.by_event_type.items()
                   if totals.skipped_total and not totals.delivered)
    if not whole:
        return
    reasons = ", ".join(f"{reason} {count}" for reason, count in sorted(summary.skipped.items()))
    click.echo(f"\n{len(whole)} event types sent nothing ({reasons}): their records name "
               "neither an external_user_id nor a device_id (Braze's own id only), and "
               "Amplitude needs one of them. `--identity-fallback braze_id` sends them under "
               "Braze's id instead. They are: " + ", ".join(whole))


@contextmanager
def _workdir(path: str | None) -> Iterator[Path]:
    if path:
        Path(path).mkdir(parents=True, exist_ok=True)
        yield Path(path)
    else:
        with tempfile.TemporaryDirectory(prefix="currents-export-demo-") as tmp:
            yield Path(tmp)
