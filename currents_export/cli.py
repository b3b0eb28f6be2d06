"""The ``currents-export`` command line: parse options, build the run, print the result.

Every option can also come from ``CURRENTS_EXPORT_<OPTION>`` or from the TOML file given
with ``--config`` (command line > environment > config file > default).
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import sys
import tempfile
import tomllib
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import IO, Any

import boto3
import click
import orjson

from currents_export import __version__
from currents_export.amplitude.client import AmplitudeClient
from currents_export.awserrors import explain
from currents_export.backfill import (
    dispatch_to_sqs,
    parse_hour,
    queue_url,
    write_manifest,
)
from currents_export.config import (
    DEFAULT_DEAD_LETTER_DIR,
    DEFAULT_LANES,
    DEFAULT_MIN_ID_LENGTH,
    DEFAULT_STATE_PATH,
    REQUEST_LIMITS,
    THROTTLE_PAUSE_S,
    RetryPolicy,
    endpoint_url,
)
from currents_export.currents.reader import open_records
from currents_export.currents.schemas import pii_fields
from currents_export.deadletter import DeadLetterConfigError, open_dead_letter
from currents_export.display import LiveProgress
from currents_export.errors import (
    EXIT_CONFIG,
    EXIT_INTERRUPTED_TWICE,
    EXIT_OK,
    EXIT_UNFINISHED,
    ConfigurationError,
    CurrentsExportError,
    ObjectError,
    OutputPathError,
)
from currents_export.ledger import LedgerConfigError, open_ledger
from currents_export.mapping import Mapped, MappingOptions, mapper_for
from currents_export.mapping.settings import MappingConfigError, mapping_options
from currents_export.observability import quiet_wire_logs
from currents_export.pipeline import Pipeline
from currents_export.privatefiles import open_private_for_writing
from currents_export.redrive import Redrive
from currents_export.sources import SourceError, SourceObject, find_local_objects
from currents_export.sources.s3 import (
    KeyFilter,
    S3Location,
    list_objects,
    objects_from_uris,
    s3_client,
)
from currents_export.stopping import Stop
from currents_export.summary import ObjectReport, RunSummary
from currents_export.workers import ProcessRun, WorkerSpec, default_workers

ENV_PREFIX = "CURRENTS_EXPORT_"
_MAPPING_META = "currents_export.mapping_options"  # ctx.meta key: the [mapping] options
log = logging.getLogger("currents_export")


def _env(name: str, *extra: str) -> list[str]:
    return [ENV_PREFIX + name.upper().replace("-", "_"), *extra]


def _load_config(ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    """Read the TOML file into click's default_map, after checking every key is known."""
    if not value:
        return value
    path = Path(value)
    try:
        text = path.read_text(encoding="utf-8")
        data = tomllib.loads(text)
    except FileNotFoundError:
        raise click.BadParameter(f"{value}: no such file", param_hint="--config") from None
    except tomllib.TOMLDecodeError as exc:
        raise click.BadParameter(
            f"{value}: not valid TOML ({exc})", param_hint="--config"
        ) from None
    known = {p.name for p in ctx.command.params if p.name and p.name != "config"}
    defaults = _mapping_defaults(ctx, value, text, data.pop("mapping", None), known)
    for key, item in data.items():
        name = key.replace("-", "_")
        if name not in known:
            raise click.BadParameter(
                f"{value}: unknown key {key!r}; known keys for "
                f"'{ctx.info_name}': {', '.join(sorted(known))}",
                param_hint="--config",
            )
        defaults[name] = item
    ctx.default_map = {**(ctx.default_map or {}), **defaults}
    return value


def _mapping_defaults(
    ctx: click.Context, source: str, text: str, table: Any, known: set[str]
) -> dict[str, Any]:
    """Check the [mapping] table; keep its options for the command and return the values it
    gives for options that also exist as flags (so flags and variables still win)."""
    if table is None:
        return {}
    if not isinstance(table, dict):
        raise click.BadParameter(f"{source}: mapping must be a table", param_hint="--config")
    try:
        options = mapping_options(table, source=source, text=text, environ=os.environ)
    except MappingConfigError as exc:
        raise click.BadParameter(str(exc), param_hint="--config") from None
    ctx.meta[_MAPPING_META] = options
    identity = table.get("identity", {})
    given = {
        "profile": "profile" in table,
        "identity_fallback": "fallback" in identity,
        "min_id_length": "min_id_length" in identity,
    }
    values = {"profile": options.profile, "identity_fallback": options.identity_fallback,
              "min_id_length": options.min_id_length}
    return {name: values[name] for name, present in given.items() if present and name in known}


def _mapping_options(profile: str, identity_fallback: str) -> MappingOptions:
    """The [mapping] options of --config (if any), with the profile flags applied."""
    base = click.get_current_context().meta.get(_MAPPING_META) or MappingOptions()
    return base.with_overrides(profile=profile, identity_fallback=identity_fallback)


def _apply(options: list[Callable[..., Any]], command: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed(options):
        command = option(command)
    return command


def amplitude_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Options of every command that uploads: where, how, and how patiently."""
    return _apply([
        click.option("--config", type=click.Path(dir_okay=False), envvar=_env("config"),
                     is_eager=True, expose_value=False, callback=_load_config,
                     help="TOML file with option values (keys as option names)."),
        click.option("--api-key", envvar=_env("api_key", "AMPLITUDE_API_KEY"),
                     help="Amplitude project API key. Prefer AMPLITUDE_API_KEY or "
                          "--api-key-file: a command line is visible to every user (ps)."),
        click.option("--api-key-file", type=click.Path(dir_okay=False),
                     envvar=_env("api_key_file"),
                     help="Read the Amplitude API key from this file (owner-only, e.g. "
                          "chmod 600)."),
        click.option("--region", type=click.Choice(["us", "eu"]), default="us",
                     envvar=_env("region"), show_default=True,
                     help="Amplitude data centre."),
        click.option("--amplitude-url", envvar=_env("amplitude_url"),
                     help="Base URL of the Amplitude API (overrides --region), "
                          "e.g. the local emulator."),
        click.option("--api", type=click.Choice(["http", "batch"]), default="batch",
                     envvar=_env("api"), show_default=True,
                     help="HTTP API v2 or the Batch API."),
        click.option("--min-id-length", type=click.IntRange(1), default=DEFAULT_MIN_ID_LENGTH,
                     envvar=_env("min_id_length"), show_default=True,
                     help="Shortest user_id/device_id Amplitude should accept."),
        click.option("--lanes", type=click.IntRange(1, 64), default=DEFAULT_LANES,
                     envvar=_env("lanes"), show_default=True,
                     help="Requests in flight at once (never two for one user or device)."),
        click.option("--retry-horizon", type=click.FloatRange(0), default=900.0,
                     envvar=_env("retry_horizon"), show_default=True,
                     help="Seconds to keep retrying an unreachable or failing Amplitude "
                          "before leaving the object pending for the next run."),
        click.option("--throttle-pause", type=click.FloatRange(0), envvar=_env("throttle_pause"),
                     help="Seconds to hold the events of users/devices Amplitude throttles "
                          "(429). Default: 30 for --api http, 15 for --api batch."),
        click.option("--summary-json", type=click.Path(dir_okay=False, writable=True),
                     envvar=_env("summary_json"), help="Write the run summary as JSON."),
        click.option("-v", "--verbose", count=True, help="More log output (-v, -vv)."),
    ], command)


def _dead_letter_kms_key_option() -> Callable[..., Any]:
    return click.option(
        "--dead-letter-kms-key", envvar=_env("dead_letter_kms_key"), metavar="KEY_ID_OR_ARN",
        help="Encrypt an s3:// dead letter with this KMS key (SSE-KMS) instead of SSE-S3.")


def _progress_option() -> Callable[..., Any]:
    return click.option(
        "--progress/--no-progress", default=None,
        help="A live display on stderr (events/s, objects, delivered, skipped, dead-lettered, "
             "ETA): one line rewritten every second on a terminal, a line every 30 s "
             "elsewhere. Default: on when stderr is a terminal.")


def _workers_option() -> Callable[..., Any]:
    return click.option(
        "--workers", type=click.IntRange(1, 64), envvar=_env("workers"),
        help="Worker processes, each processing objects on its own (its own lanes, ledger "
             "connection and dead-letter files). Default: the number of CPUs this process "
             "may use; 1 with --output.")


def _effective_workers(workers: int | None, settings: dict[str, Any]) -> int:
    """--workers, or its default; --output (one file) takes one process."""
    if workers is None:
        return 1 if settings.get("output") else default_workers()
    if workers > 1 and settings.get("output"):
        raise click.UsageError(
            f"--output writes one file from one process: with --workers {workers} the "
            "workers' lines would interleave; use --workers 1 with --output")
    return workers


def _live_progress(command: str, progress: bool | None) -> LiveProgress | None:
    """The live display on stderr, or None: --progress/--no-progress, else a terminal's."""
    stream = sys.stderr
    if progress is None:
        progress = stream.isatty()
    return LiveProgress(command, stream) if progress else None


def replay_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Options of the commands that read Currents objects, map and upload them."""
    return _apply([
        click.option("--profile", type=click.Choice(["braze", "plain"]), default="braze",
                     envvar=_env("profile"), show_default=True,
                     help="braze: names as Braze's Amplitude connector; plain: raw names."),
        click.option("--identity-fallback", type=click.Choice(["none", "braze_id"]),
                     default="none", envvar=_env("identity_fallback"), show_default=True,
                     help="For records with neither external_user_id nor device_id: skip "
                          "them (none) or use Braze's internal id as user_id (braze_id)."),
        click.option("--dry-run", is_flag=True, envvar=_env("dry_run"),
                     help="Map everything, send nothing, mark nothing done."),
        click.option("--output", type=click.Path(dir_okay=False, writable=True),
                     envvar=_env("output"), help="Also write mapped events as JSON lines."),
        click.option("--state", default=DEFAULT_STATE_PATH, envvar=_env("state"),
                     show_default=True,
                     help="Ledger of finished objects: a SQLite file path."),
        click.option("--checkpoint-every", type=click.IntRange(1), default=10_000,
                     envvar=_env("checkpoint_every"), show_default=True,
                     help="Records between progress checkpoints inside an object."),
        click.option("--dead-letter", default=DEFAULT_DEAD_LETTER_DIR,
                     envvar=_env("dead_letter"), show_default=True,
                     help="Directory for events that could not be delivered."),
        _dead_letter_kms_key_option(),
        click.option("--s3-endpoint-url", envvar=_env("s3_endpoint_url"),
                     help="Endpoint of an S3-compatible store."),
        click.option("--force", is_flag=True, envvar=_env("force"),
                     help="Process objects even if the ledger says they are done (or failed "
                          "permanently)."),
        click.option("--retry-failed", is_flag=True, envvar=_env("retry_failed"),
                     help="Try again the objects that failed permanently before (not Avro, "
                          "corrupt, refused codec); see `currents-export status`."),
    ], command)


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
    click.echo(f"Error: {message}", err=True)
    sys.exit(status)


@click.group(cls=_Answers,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="currents-export")
def main() -> None:
    """Move Braze Currents (Avro files) into Amplitude."""


@main.command()
@click.argument("paths", nargs=-1, required=True)
@amplitude_options
@replay_options
@_workers_option()
@_progress_option()
def replay(
    paths: tuple[str, ...], workers: int | None, progress: bool | None, **settings: Any
) -> None:
    """Replay Avro files or directories (searched recursively for .avro) into Amplitude."""
    _setup_logging(settings["verbose"])
    count = _effective_workers(workers, settings)
    try:
        objects = find_local_objects(paths)
    except SourceError as exc:
        raise click.UsageError(str(exc)) from None
    if not objects:
        raise click.UsageError(f"no .avro files under {', '.join(paths)}")
    live = _live_progress("replay", progress)
    if live is not None:
        live.set_totals(len(objects), (source.size for source in objects))
    summary = run_pipeline(objects, settings, workers=min(count, len(objects)), progress=live)
    _finish(summary, settings)


def run_pipeline(
    objects: Iterable[SourceObject],
    settings: dict[str, Any],
    *,
    workers: int = 1,
    progress: LiveProgress | None = None,
) -> RunSummary:
    """Build the pipeline from the options and run it over ``objects``: in this process,
    or over ``workers`` worker processes (``currents_export.workers``).

    The first SIGINT/SIGTERM stops reading, saves progress and returns the summary; a
    second one exits at once. ``progress`` shows the pipelines' snapshots while they run
    and writes its last line before this returns (before the summary).
    """
    _check_output_paths(settings)
    stop = Stop()
    if workers > 1:
        return _run_in_processes(objects, settings, workers, stop, progress)
    with ExitStack() as stack, _stop_on_signals(stop):
        pipeline = _build_pipeline(settings, stack, stop)
        if progress is not None:
            progress.add(pipeline)
            stack.enter_context(progress)
        return pipeline.run(objects)
    raise AssertionError("unreachable")


def _run_in_processes(
    objects: Iterable[SourceObject],
    settings: dict[str, Any],
    workers: int,
    stop: Stop,
    progress: LiveProgress | None,
) -> RunSummary:
    """Resolve what needs the command line here (the API key, the [mapping] options), check
    the set-up before any work, and run the worker processes."""
    if settings.get("output"):
        raise click.UsageError("--output needs --workers 1")
    api_key = None if settings["dry_run"] else _api_key(settings)
    options = _mapping_options(settings["profile"], settings["identity_fallback"])
    worker_settings = {**settings, "api_key": None, "api_key_file": None, "summary_json": None}
    spec = WorkerSpec(_worker_pipeline, (worker_settings, options, api_key),
                      s3_endpoint_url=settings["s3_endpoint_url"])
    run = ProcessRun(spec, workers=workers, stop=stop, dry_run=settings["dry_run"],
                     progress=progress)
    with ExitStack() as stack, _stop_on_signals(stop, on_exit=run.kill):
        # Client, ledger, dead letter: built here once, so that a bad set-up is an answer
        # before any worker starts; the ledger frees the leases of a worker that dies.
        checked = _build_pipeline(settings, stack, stop, api_key=api_key, options=options)
        run.ledger = checked.ledger
        if progress is not None:
            stack.enter_context(progress)
        return run.run(objects)
    raise AssertionError("unreachable")


def _worker_pipeline(
    settings: dict[str, Any],
    options: MappingOptions,
    api_key: str | None,
    stack: ExitStack,
    stop: Stop,
    on_object: Callable[[ObjectReport], None],
) -> Pipeline:
    """A worker process's pipeline (see ``currents_export.workers``)."""
    _setup_logging(settings["verbose"])
    try:
        return _build_pipeline(settings, stack, stop, on_object, api_key=api_key,
                               options=options)
    except click.ClickException as exc:
        raise ConfigurationError(exc.format_message()) from None


@contextmanager
def _stop_on_signals(stop: Stop, on_exit: Callable[[], None] | None = None) -> Iterator[None]:
    """SIGINT/SIGTERM: the first asks the run to stop cleanly, a second exits at once
    (after ``on_exit``: e.g. killing the worker processes)."""

    def handle(signum: int, _frame: object) -> None:
        if stop.requested:
            os.write(2, b"\ninterrupted again: exiting now\n")
            if on_exit is not None:
                on_exit()
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


def _check_output_paths(settings: dict[str, Any]) -> None:
    """Fail before any work when an output cannot be written (not after a long run)."""
    for option in ("summary_json", "output"):
        value = settings.get(option)
        if value:
            _check_writable_file(value, "--" + option.replace("_", "-"))
    state = settings.get("state") or ""
    if state and "://" not in state:
        if Path(state).is_dir():
            raise OutputPathError(f"--state {state}: is a directory; give the ledger's file "
                                  "name (e.g. state.sqlite)")
        _check_creatable_dir(Path(state).parent, "--state")
    dead_letter = settings.get("dead_letter") or ""
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


_SOURCE_RANK = {  # command line > environment > config file > default
    click.core.ParameterSource.COMMANDLINE: 3, click.core.ParameterSource.ENVIRONMENT: 2,
    click.core.ParameterSource.DEFAULT_MAP: 1,
}


def _api_key(settings: dict[str, Any]) -> str | None:
    """The key from --api-key or --api-key-file (whichever comes from the stronger source);
    a key typed on the command line gets a warning (ps shows it to every user)."""
    ctx = click.get_current_context(silent=True)
    sources = {name: ctx.get_parameter_source(name) if ctx is not None else None
               for name in ("api_key", "api_key_file")}
    rank = {name: _SOURCE_RANK.get(source, 0) if source is not None else 0
            for name, source in sources.items()}
    key, path = settings.get("api_key"), settings.get("api_key_file")
    if key and path:
        if rank["api_key"] == rank["api_key_file"]:
            raise click.UsageError("give the API key once: --api-key or --api-key-file")
        if rank["api_key_file"] > rank["api_key"]:
            key = None
        else:
            path = None
    if path:
        return _read_api_key_file(path)
    if key and sources["api_key"] is click.core.ParameterSource.COMMANDLINE:
        click.echo("Warning: --api-key on the command line is visible to every user of this "
                   "machine (ps, shell history); set AMPLITUDE_API_KEY (or "
                   "CURRENTS_EXPORT_API_KEY) or use --api-key-file PATH instead.", err=True)
    return key or None


def _read_api_key_file(path: str) -> str:
    try:
        with open(path, "rb") as file:
            mode = os.fstat(file.fileno()).st_mode
            text = file.read().decode("utf-8").strip()
    except FileNotFoundError:
        raise ConfigurationError(f"--api-key-file {path}: no such file") from None
    except UnicodeDecodeError:
        raise ConfigurationError(f"--api-key-file {path}: not UTF-8 text") from None
    except OSError as exc:
        raise ConfigurationError(f"--api-key-file {path}: {exc.strerror or exc}") from None
    if not text:
        raise ConfigurationError(f"--api-key-file {path}: the file is empty")
    if mode & 0o077:
        click.echo(f"Warning: --api-key-file {path} can be read by other users (mode "
                   f"{mode & 0o777:o}); chmod 600 {path}", err=True)
    return text


def _build_client(
    settings: dict[str, Any], stack: ExitStack, stop: Stop | None = None,
    api_key: str | None = None,
) -> AmplitudeClient:
    api_key = api_key or _api_key(settings)
    if not api_key:
        raise click.UsageError(
            "no Amplitude API key: set AMPLITUDE_API_KEY or pass --api-key-file "
            "(or use --dry-run to send nothing)"
        )
    api = settings["api"]
    pause = settings["throttle_pause"]
    client = AmplitudeClient(
        endpoint_url(api, settings["region"], settings["amplitude_url"]),
        api_key,
        min_id_length=settings["min_id_length"],
        retry=RetryPolicy(horizon_s=settings["retry_horizon"]),
        throttle_pause_s=THROTTLE_PAUSE_S[api] if pause is None else pause,
        stop=stop,
    )
    stack.callback(client.close)
    return client


def _build_pipeline(
    settings: dict[str, Any],
    stack: ExitStack,
    stop: Stop,
    on_object: Callable[[ObjectReport], None] | None = None,
    *,
    api_key: str | None = None,
    options: MappingOptions | None = None,
) -> Pipeline:
    """The run's pipeline with what it uses (client, ledger, dead letter, --output).

    ``api_key`` and ``options`` resolved already (a worker process has no command line);
    else from the options and the command's context.
    """
    client = (None if settings["dry_run"]
              else _build_client(settings, stack, stop, api_key=api_key))
    try:
        ledger = open_ledger(settings["state"])
        s3 = None
        if settings["dead_letter"].startswith("s3://"):
            s3 = s3_client(settings["s3_endpoint_url"])
            _check_bucket(s3, settings["dead_letter"])
        dead_letter = open_dead_letter(settings["dead_letter"], s3_client=s3,
                                       kms_key=settings.get("dead_letter_kms_key"))
    except (LedgerConfigError, DeadLetterConfigError) as exc:
        raise click.UsageError(str(exc)) from None
    stack.callback(ledger.close)
    stack.callback(dead_letter.close)
    ledger.state("currents-export:check")  # a missing table or bad file: exit 2, before work
    output: IO[bytes] | None = None
    if settings["output"]:
        output = stack.enter_context(open_private_for_writing(settings["output"]))  # 0600
    if options is None:
        options = _mapping_options(settings["profile"], settings["identity_fallback"])
    return Pipeline(
        client=client,
        ledger=ledger,
        dead_letter=dead_letter,
        options=options,
        limits=REQUEST_LIMITS[settings["api"]],
        min_id_length=settings["min_id_length"],
        output=output,
        force=settings["force"],
        lanes=settings["lanes"],
        checkpoint_every=settings["checkpoint_every"],
        retry_failed=settings["retry_failed"],
        stop=stop,
        on_object=on_object,
    )


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


def _finish(summary: RunSummary, settings: dict[str, Any]) -> None:
    """Print and write the summary (always), then exit with the documented status."""
    click.echo(summary.render())
    if settings["summary_json"]:
        try:
            Path(settings["summary_json"]).write_bytes(
                orjson.dumps(summary.to_json(), option=orjson.OPT_INDENT_2)
            )
        except OSError as exc:
            click.echo(f"Error: --summary-json {settings['summary_json']}: "
                       f"{exc.strerror or exc}", err=True)
    if summary.configuration_error:
        click.echo(f"Error: {summary.configuration_error}. Nothing more was marked done.",
                   err=True)
        sys.exit(EXIT_CONFIG)
    failed = summary.objects_failed or summary.interrupted
    sys.exit(EXIT_UNFINISHED if failed else EXIT_OK)


@main.command()
@click.argument("uri")
@click.option("--since", help="First queue hour (UTC), YYYY-MM-DD or YYYY-MM-DD-HH "
                               "(the date= folder: pad it, events queue late).")
@click.option("--until", help="Last queue hour (UTC), inclusive; a day means its last hour.")
@click.option("--event-type", "event_types", multiple=True,
              help="Only this Currents event type (repeatable).")
@_workers_option()
@click.option("--dispatch", help="sqs://QUEUE_URL: enqueue one message per object for the "
                                 "Lambda fleet instead of processing here.")
@click.option("--manifest", type=click.Path(dir_okay=False, writable=True),
              help="Write an S3 Batch Operations CSV manifest instead of processing here.")
@_progress_option()
@amplitude_options
@replay_options
def backfill(
    uri: str,
    since: str | None,
    until: str | None,
    event_types: tuple[str, ...],
    workers: int | None,
    dispatch: str | None,
    manifest: str | None,
    progress: bool | None,
    **settings: Any,
) -> None:
    """Process (or dispatch) the Currents objects under s3://BUCKET/PREFIX; resumable."""
    _setup_logging(settings["verbose"])
    try:
        location = S3Location.parse(uri)
        key_filter = KeyFilter(parse_hour(since), parse_hour(until, end=True),
                               frozenset(event_types))
        url = queue_url(dispatch) if dispatch else None
    except (SourceError, ValueError) as exc:
        raise click.UsageError(str(exc)) from None
    client = s3_client(settings["s3_endpoint_url"])
    objects = list_objects(client, location, key_filter)
    try:
        if url is not None:
            sent = dispatch_to_sqs(boto3.client("sqs"), url, location.bucket, objects)
            click.echo(f"dispatched {sent} objects to {url}")
            return
        if manifest is not None:
            with Path(manifest).open("w", encoding="utf-8") as out:
                count = write_manifest(out, location.bucket, objects)
            click.echo(f"wrote {count} objects to the manifest {manifest} "
                       "(format S3BatchOperations_CSV_20180820, fields Bucket, Key)")
            return
        count = _effective_workers(workers, settings)
        live = _live_progress("backfill", progress)
        if live is not None:  # the listing is lazy: the total is known once it ends
            objects = live.counting(objects)
        summary = run_pipeline(objects, settings, workers=count, progress=live)
    except SourceError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(EXIT_CONFIG)
    _finish(summary, settings)


@main.command()
@click.argument("dead_letter")
@click.option("--reason", "reasons", multiple=True,
              help="Only lines with this reason (repeatable); default: all.")
@click.option("--s3-endpoint-url", envvar=_env("s3_endpoint_url"),
              help="Endpoint of an S3-compatible store (for an s3:// dead letter).")
@_dead_letter_kms_key_option()
@amplitude_options
def redrive(
    dead_letter: str, reasons: tuple[str, ...], s3_endpoint_url: str | None, **settings: Any
) -> None:
    """Re-send dead-lettered events from DEAD_LETTER (a directory or s3://BUCKET/PREFIX);
    what gets delivered leaves the dead letter, what stays keeps its latest reason."""
    from currents_export.deadletter import open_dead_letter_store

    _setup_logging(settings["verbose"])
    try:
        store = open_dead_letter_store(
            dead_letter,
            s3_client=s3_client(s3_endpoint_url) if dead_letter.startswith("s3://") else None,
            kms_key=settings["dead_letter_kms_key"],
        )
    except DeadLetterConfigError as exc:
        raise click.UsageError(f"dead letter {exc}") from None
    stop = Stop()
    with ExitStack() as stack, _stop_on_signals(stop):
        client = _build_client(settings, stack, stop)
        redrive_run = Redrive(
            client, REQUEST_LIMITS[settings["api"]], settings["min_id_length"],
            lanes=settings["lanes"], reasons=frozenset(reasons),
        )
        try:
            summary = redrive_run.run(store)
        except ConfigurationError as exc:
            click.echo(f"Error: {exc}. The redrive stopped: dead-letter files it had finished "
                       "were rewritten without what was delivered (see the redrive log); the "
                       "file it was on and the ones after it were not changed. Run it again "
                       "once this is fixed.", err=True)
            sys.exit(EXIT_CONFIG)
    _finish(summary, settings)


def _setup_logging(verbose: int) -> None:
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    # Third-party wire logs (headers, AWS session tokens, secrets) stay quiet at -vv too.
    quiet_wire_logs()


@main.command("status")
@click.option("--state", default=DEFAULT_STATE_PATH, envvar=_env("state"), show_default=True,
              help="The ledger to read: a SQLite file path or dynamodb://TABLE.")
@click.option("--all", "show_all", is_flag=True, help="List the objects that are done too.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def status_command(state: str, show_all: bool, as_json: bool) -> None:
    """What the ledger knows: how many objects are done, in progress and failed, and for
    each object not done why, where it was last read from and since when."""
    from currents_export.status import StatusError, read_states, render_json, render_text

    try:
        states = read_states(state)
    except StatusError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(EXIT_CONFIG)
    if as_json:
        report = render_json(states, source=state, show_all=show_all)
        click.echo(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
    else:
        click.echo(render_text(states, source=state, show_all=show_all))


@main.command()
@click.argument("target")
@click.option("--config", type=click.Path(dir_okay=False), envvar=_env("config"),
              is_eager=True, expose_value=False, callback=_load_config,
              help="TOML configuration whose [mapping] table applies.")
@click.option("--profile", type=click.Choice(["braze", "plain"]), default="braze",
              envvar=_env("profile"), show_default=True, help="Mapping profile to show.")
@click.option("--identity-fallback", type=click.Choice(["none", "braze_id"]), default="none",
              envvar=_env("identity_fallback"), show_default=True)
@click.option("--samples", type=click.IntRange(0), default=3, show_default=True,
              help="How many mapped events to show.")
@click.option("--s3-endpoint-url", envvar=_env("s3_endpoint_url"),
              help="Endpoint of an S3-compatible store.")
def inspect(
    target: str, profile: str, identity_fallback: str, samples: int, s3_endpoint_url: str | None
) -> None:
    """Show a file's (or an s3:// object's) schema, records, the mapping that applies to it
    (under --config) and mapped samples."""
    try:
        if target.startswith("s3://"):
            [source] = objects_from_uris(s3_client(s3_endpoint_url), [target])
        else:
            [source] = find_local_objects([target])
    except (SourceError, ValueError) as exc:
        raise click.UsageError(str(exc)) from None
    options = _mapping_options(profile, identity_fallback)
    try:
        report = _inspect(source, options, samples)
    except (ObjectError, OSError) as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(EXIT_UNFINISHED)
    click.echo(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())


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
    from currents_export.mapping.privacy import schema_outline

    with source.open() as fileobj:
        stream = open_records(fileobj, source.uri, source.key_event_type)
        mapper = mapper_for(stream.event_type, options, stream.float_fields)
        records = 0
        mapped: list[dict[str, Any]] = []
        outcomes: dict[str, int] = {}
        for record in stream.records:
            records += 1
            result = mapper.map(record)
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
            "event_type": mapper.amplitude_event_type,
            "fields": [
                {"field": name, "pii": pii, "class": field_class(name), "goes_to": where}
                for name, pii, where in _routes(stream.event_type, options, stream.writer_schema)
            ],
        },
        # structure only: docs and defaults could hold sample data
        "writer_schema": schema_outline(stream.writer_schema),
        "sample_events": mapped,  # mapped events: under the privacy policy
    }


@main.command()
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.option("--events", type=click.IntRange(1), default=200, show_default=True,
              help="Records per event type (duplicates included).")
@click.option("--event-type", "event_types", multiple=True,
              help="Only this event type (repeatable); default all 94.")
@click.option("--codec", type=click.Choice(["null", "deflate"]), default="null",
              show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--files-per-type", type=click.IntRange(1), default=2, show_default=True)
def fixtures(
    out_dir: str, events: int, event_types: tuple[str, ...], codec: str, seed: int,
    files_per_type: int,
) -> None:
    """Write realistic synthetic Currents files, laid out as Braze lays them out in S3."""
    from currents_export.currents.fixtures import generate_fixtures

    try:
        files = generate_fixtures(
            Path(out_dir), events_per_type=events, event_types=event_types or None,
            codec=codec, seed=seed, files_per_type=files_per_type,
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    types = {f.event_type for f in files}
    records = sum(f.records for f in files)
    duplicates = sum(f.duplicates for f in files)
    click.echo(
        f"wrote {len(files)} files, {records} records ({duplicates} duplicates) "
        f"for {len(types)} event types under {out_dir}"
    )


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(0, 65535), default=8787, show_default=True)
@click.option("--api-key", "api_keys", multiple=True,
              help="Accept only this API key (repeatable); default: any key.")
@click.option("--latency-ms", type=click.IntRange(0, 60_000), default=0, help="Answer delay.")
def emulator(host: str, port: int, api_keys: tuple[str, ...], latency_ms: int) -> None:
    """Run the local Amplitude emulator (for trying a set-up without sending data)."""
    from currents_export.amplitude.emulator import Emulator, EmulatorConfig

    config = EmulatorConfig(valid_api_keys=frozenset(api_keys) or None, latency_ms=latency_ms)
    try:
        server = Emulator(config, host=host, port=port)
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


@main.command()
@click.option("--events", type=click.IntRange(1), default=200, show_default=True,
              help="Records per event type.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--workdir", type=click.Path(file_okay=False),
              help="Keep fixtures, ledger and dead letter here (default: a temporary dir).")
@click.option("--summary-json", type=click.Path(dir_okay=False, writable=True))
def demo(events: int, seed: int, workdir: str | None, summary_json: str | None) -> None:
    """Fixtures for all 94 types → local emulator → replay → summary, on this machine only."""
    from currents_export.amplitude.emulator import Emulator
    from currents_export.currents.fixtures import generate_fixtures

    _setup_logging(0)
    with _workdir(workdir) as root, Emulator() as server:
        files = generate_fixtures(root / "bucket", events_per_type=events, seed=seed)
        click.echo(f"1. fixtures: {len(files)} files, {sum(f.records for f in files)} records "
                   f"for {len({f.event_type for f in files})} event types in {root / 'bucket'}")
        click.echo(f"2. emulator: {server.url}")
        click.echo("3. replay:")
        # The replay command's own defaults, with the demo's endpoint, key and paths.
        settings = replay.make_context("replay", [
            str(root / "bucket"), "--api-key", "demo-api-key", "--amplitude-url", server.url,
            "--state", str(root / "state.sqlite"), "--dead-letter", str(root / "dead-letter"),
            "--retry-horizon", "60",
        ]).params
        summary = run_pipeline(find_local_objects([root / "bucket"]), settings)
        stored = len(server.events())
        click.echo(summary.render())
        click.echo(f"\nthe emulator stored {stored} events; the summary says "
                   f"{summary.delivered} delivered; invariant holds: {summary.balanced}")
        if summary_json:
            Path(summary_json).write_bytes(
                orjson.dumps(summary.to_json(), option=orjson.OPT_INDENT_2)
            )
        ok = summary.balanced and stored == summary.delivered and not summary.objects_failed
    sys.exit(EXIT_OK if ok else EXIT_UNFINISHED)


@contextmanager
def _workdir(path: str | None) -> Iterator[Path]:
    if path:
        Path(path).mkdir(parents=True, exist_ok=True)
        yield Path(path)
    else:
        with tempfile.TemporaryDirectory(prefix="currents-export-demo-") as tmp:
            yield Path(tmp)
