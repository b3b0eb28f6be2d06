"""One table of options and the frozen, typed :class:`Settings` built from it.

Every option has one name, read the same way from the command line (``--lanes 4``), the
environment (``CURRENTS_EXPORT_LANES=4``, or for a few the Lambda's first names, e.g.
``AMPLITUDE_REGION``, ``LEDGER_TABLE``) and the TOML file of ``--config`` /
``CURRENTS_EXPORT_CONFIG`` (``lanes = 4``; its ``[mapping]``: ``settings.mapping``), the
Lambda's variables included. Command line > environment > file > default; each value
remembers where it came from, so a problem names the flag, the variable, or the file and line.
"""

from __future__ import annotations

import logging
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from currents_export.amplitude.validation import DEFAULT_MIN_ID_LENGTH
from currents_export.core.lanes import DEFAULT_LANES
from currents_export.errors import MappingConfigError, SettingsError
from currents_export.mapping import MappingOptions
from currents_export.settings.deletions import DeletionOptions, deletion_options
from currents_export.settings.mapping import mapping_options
from currents_export.support.redact import without_credentials

log = logging.getLogger(__name__)

ENV_PREFIX = "CURRENTS_EXPORT_"
_URL_OPTIONS = frozenset({"amplitude_url", "privacy_url", "s3_endpoint_url"})
DEFAULT_STATE_PATH = ".currents-export/state.sqlite"
DEFAULT_DEAD_LETTER_DIR = ".currents-export/dead-letter"

# The places an option may be used: the commands, and the Lambda.
REPLAY, BACKFILL, REDRIVE, INSPECT, STATUS, DELETIONS, LAMBDA = (
    "replay", "backfill", "redrive", "inspect", "status", "deletions", "lambda")
DELETIONS_STATUS = "deletions status"  # reads the ledger only (DELETIONS: `deletions submit`)
_RUNS = frozenset({REPLAY, BACKFILL, LAMBDA})  # read objects, map them, upload
_LOCAL_RUNS = frozenset({REPLAY, BACKFILL})
_UPLOADS = _RUNS | {REDRIVE}
_CLI_UPLOADS = _LOCAL_RUNS | {REDRIVE}
_MAPPING = _RUNS | {INSPECT}
PLACES = (REPLAY, BACKFILL, REDRIVE, INSPECT, STATUS, DELETIONS, DELETIONS_STATUS, LAMBDA)


@dataclass(frozen=True, slots=True)
class Option:
    """One option: its name, type, default, allowed values, help and where it applies."""

    name: str
    kind: type  # str, int, float or bool
    default: Any
    help: str
    places: frozenset[str]
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    aliases: tuple[str, ...] = ()  # more environment variables (documented earlier names)
    secret: bool = False  # never echoed in a message
    metavar: str | None = None
    default_text: str | None = None  # the default in words, when it depends on something

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def variable(self) -> str:
        return ENV_PREFIX + self.name.upper()

    @property
    def variables(self) -> tuple[str, ...]:
        return (self.variable, *self.aliases)

    def describe_default(self) -> str:
        if self.default_text is not None:
            return self.default_text
        if self.default is None:
            return "none"
        if self.kind is bool:
            return "off" if not self.default else "on"
        if isinstance(self.default, int | float) and not isinstance(self.default, bool):
            return f"{self.default:,}" if self.kind is int else f"{self.default:g}"
        return str(self.default)


OPTIONS: tuple[Option, ...] = (
    # Where Amplitude is, and how to talk to it.
    Option("api_key", str, None, "Amplitude project API key. Prefer the variable or "
           "--api-key-file: a command line is visible to every user (ps).",
           _UPLOADS | {DELETIONS}, aliases=("AMPLITUDE_API_KEY",), secret=True),
    Option("api_key_file", str, None, "Read the Amplitude API key from this file (owner-only, "
           "e.g. chmod 600).", _CLI_UPLOADS | {DELETIONS}, metavar="PATH"),
    Option("api_key_secret", str, None, "Read the API key from this Secrets Manager secret "
           "(id or ARN; the key, or JSON with api_key).", frozenset({LAMBDA}),
           aliases=("AMPLITUDE_API_KEY_SECRET",)),
    Option("api_key_parameter", str, None, "Read the API key from this SSM SecureString "
           "parameter.", frozenset({LAMBDA}), aliases=("AMPLITUDE_API_KEY_PARAMETER",)),
    Option("secret_key", str, None, "Amplitude project secret key, for the User Privacy API "
           "(deletions). Prefer the variable or --secret-key-file.",
           frozenset({DELETIONS, LAMBDA}), aliases=("AMPLITUDE_SECRET_KEY",), secret=True),
    Option("secret_key_file", str, None, "Read the Amplitude secret key from this file "
           "(owner-only, e.g. chmod 600).", frozenset({DELETIONS}), metavar="PATH"),
    Option("secret_key_secret", str, None, "Read the secret key from this Secrets Manager "
           "secret (id or ARN; the key, or JSON with secret_key).", frozenset({LAMBDA})),
    Option("secret_key_parameter", str, None, "Read the secret key from this SSM "
           "SecureString parameter.", frozenset({LAMBDA})),
    Option("region", str, "us", "Amplitude data centre.", _UPLOADS | {DELETIONS},
           choices=("us", "eu"), aliases=("AMPLITUDE_REGION",)),
    Option("amplitude_url", str, None, "Base URL of the Amplitude API (overrides --region), "
           "e.g. the local emulator.", _UPLOADS | {DELETIONS}, aliases=("AMPLITUDE_URL",),
           metavar="URL"),
    Option("privacy_url", str, None, "Base URL of the User Privacy API (overrides --region: "
           "amplitude.com, analytics.eu.amplitude.com), e.g. the local emulator. Not taken "
           "from --amplitude-url: the secret key goes only where this says.",
           frozenset({DELETIONS, LAMBDA}), metavar="URL"),
    Option("api", str, "batch", "HTTP API v2 (http, /2/httpapi) or the Batch API (batch, "
           "/batch).", _UPLOADS, choices=("http", "batch"), aliases=("AMPLITUDE_API",)),
    Option("min_id_length", int, DEFAULT_MIN_ID_LENGTH, "Shortest user_id/device_id "
           "Amplitude should accept, sent as options.min_id_length (also [mapping.identity] "
           "min_id_length).", _UPLOADS,
           minimum=1),
    Option("lanes", int, DEFAULT_LANES, "Requests in flight at once (never two for one user "
           "or device).", _UPLOADS, minimum=1, maximum=64),
    Option("retry_horizon", float, 900.0, "Seconds the run keeps retrying while Amplitude "
           "fails (5xx, timeouts, 200s that are not Amplitude's, throttling), counted from "
           "the first failure after the last success; a wait that would pass it is cut so "
           "the last attempt goes at the horizon; if that fails too, the run stops sending "
           "and leaves the objects pending for the next run (the Lambda stops sooner, at its "
           "deadline). Amplitude's 60 s pause after a project 429 counts toward it; waiting "
           "for --max-events-per-second does not.",
           _UPLOADS, minimum=0, metavar="SECONDS"),
    Option("throttle_pause", float, None, "Seconds to hold the events of users/devices "
           "Amplitude throttles (429).", _UPLOADS, minimum=0, metavar="SECONDS",
           default_text="30 for --api http, 15 for --api batch"),
    Option("max_events_per_second", int, None, "Send at most this many events per second "
           "(the run's share of the Amplitude project's limit; Starter plan: 1,000): requests "
           "leave evenly; waiting for the budget never counts toward --retry-horizon. Without "
           "it the rate is found after Amplitude's first 429 (a 60 s pause).", _UPLOADS,
           minimum=1, metavar="N", default_text="none (found after a 429)"),
    Option("max_requests_per_second", int, None, "Send at most this many requests per second "
           "(Starter plan: 100).", _UPLOADS, minimum=1, metavar="N"),
    Option("budget_shares", int, 1, "Runs that share the two budgets above at once: each "
           "paces at budget / this (the stack sets it to the function's concurrency).",
           _UPLOADS, minimum=1, maximum=10_000, metavar="N"),
    # What to read and how to map it.
    Option("profile", str, "braze", "braze: names as Braze's Amplitude connector; plain: raw "
           "names (also [mapping] profile).", _MAPPING, choices=("braze", "plain")),
    Option("identity_fallback", str, "none", "For records with neither external_user_id nor "
           "device_id: skip them (none) or use Braze's internal id as user_id (braze_id) "
           "(also [mapping.identity] fallback).", _MAPPING, choices=("none", "braze_id")),
    Option("s3_endpoint_url", str, None, "Endpoint of an S3-compatible store (default: AWS, "
           "or AWS_ENDPOINT_URL).", _CLI_UPLOADS | {INSPECT}, metavar="URL"),
    # Where the run keeps its state and what it could not deliver.
    Option("state", str, DEFAULT_STATE_PATH, "Ledger of finished objects: a SQLite file path, "
           "or dynamodb://TABLE (the Lambda's; LEDGER_TABLE=TABLE means the same).",
           _RUNS | {STATUS, DELETIONS, DELETIONS_STATUS}, aliases=("LEDGER_TABLE",),
           metavar="PATH|dynamodb://TABLE",
           default_text=f"{DEFAULT_STATE_PATH} (the Lambda: required, dynamodb://)"),
    Option("checkpoint_every", int, 5_000, "Records between progress checkpoints inside an "
           "object.", _RUNS, minimum=1),
    Option("dead_letter", str, DEFAULT_DEAD_LETTER_DIR, "Where events that could not be "
           "delivered go: a directory, or s3://BUCKET/PREFIX (SSE-S3, or SSE-KMS with "
           "--dead-letter-kms-key).", _RUNS, metavar="DIR|s3://BUCKET/PREFIX",
           default_text=f"{DEFAULT_DEAD_LETTER_DIR} (the Lambda: required, s3://)"),
    Option("dead_letter_kms_key", str, None, "Encrypt an s3:// dead letter with this KMS key "
           "(SSE-KMS) instead of SSE-S3.", _RUNS | {REDRIVE}, metavar="KEY_ID_OR_ARN"),
    Option("output", str, None, "Also write the mapped events as JSON lines to this file.",
           _LOCAL_RUNS, metavar="PATH"),
    Option("summary_json", str, None, "Write the run summary as JSON to this file.",
           _CLI_UPLOADS | {DELETIONS}, metavar="PATH"),
    # How the run goes.
    Option("dry_run", bool, False, "Map everything, send nothing, mark nothing done; the "
           "ledger is not read either (it shows everything that would be sent). For "
           "deletions: list what would be deleted, submit nothing.", _LOCAL_RUNS | {DELETIONS}),
    Option("force", bool, False, "Process objects even if the ledger says they are done (or "
           "failed permanently); warns when they were finished more than 7 days ago "
           "(Amplitude drops a repeated insert_id only for 7 days).", _LOCAL_RUNS),
    Option("fail_on_dead_letter", bool, False, "Exit 3 when the run finished but "
           "dead-lettered something (for a scheduler that must notice; 0, 1 and 2 keep their "
           "meaning).", _CLI_UPLOADS),
    Option("retry_failed", bool, False, "Try again the objects that failed permanently before "
           "(not Avro, corrupt, refused codec); see `currents-export status`.", _LOCAL_RUNS),
    Option("rebind_destination", bool, False, "The ledger (--state) records where its objects "
           "were delivered (Amplitude host, API key fingerprint) and refuses a run to "
           "another. When the same project's API key was rotated, this binds it to the new "
           "key, so objects done stay done (another host is allowed too, with a warning). "
           "For one run: turn it off again. Another project wants another --state.",
           _LOCAL_RUNS | {DELETIONS, LAMBDA}),
    Option("workers", int, None, "Worker processes, each processing objects on its own (its "
           "own lanes, ledger connection and dead-letter files); one display and one summary "
           "for the run.", _LOCAL_RUNS, minimum=1,
           maximum=64, default_text="the CPUs this process may use; 1 with --output"),
    # The Lambda only.
    Option("deadline_margin_s", float, 60.0, "Stop this many seconds before the Lambda's "
           "deadline: save progress, report the object unfinished.", frozenset({LAMBDA}),
           minimum=1),
    Option("log_level", str, None, "Log level of the Lambda's JSON logs.", frozenset({LAMBDA}),
           choices=("DEBUG", "INFO", "WARNING", "ERROR"),
           default_text="AWS_LAMBDA_LOG_LEVEL, else INFO"),
    Option("pii_salt_secret", str, None, "Secrets Manager secret holding the hashing salt of "
           "[mapping.pii] (the salt, or JSON with salt).", frozenset({LAMBDA})),
    Option("pii_salt_parameter", str, None, "SSM SecureString parameter holding the hashing "
           "salt of [mapping.pii].", frozenset({LAMBDA})),
)
OPTION = {option.name: option for option in OPTIONS}
CONFIG_VARIABLE = ENV_PREFIX + "CONFIG"
DEFAULT_CONFIG = "currents-export.toml"  # read from the working directory when present
_DYNAMODB = "dynamodb://"


CHECK = "check"  # `check`: every option a backfill or a deletions submit would use
_CHECKED = frozenset({REPLAY, BACKFILL, DELETIONS})
# What a run does, not where it goes: `check` ignores them (a config file may set them).
_NOT_CHECKED = frozenset({"output", "summary_json", "dry_run", "force", "retry_failed",
                          "workers", "checkpoint_every"})


def options_for(place: str) -> tuple[Option, ...]:
    if place == CHECK:
        return tuple(option for option in OPTIONS
                     if option.places & _CHECKED and option.name not in _NOT_CHECKED)
    return tuple(option for option in OPTIONS if place in option.places)


@dataclass(frozen=True, slots=True)
class Settings:
    """Every option's value for one command (or the Lambda), and where each came from."""

    place: str
    api_key: str | None = field(default=None, repr=False)
    api_key_file: str | None = None
    api_key_secret: str | None = None
    api_key_parameter: str | None = None
    secret_key: str | None = field(default=None, repr=False)
    secret_key_file: str | None = None
    secret_key_secret: str | None = None
    secret_key_parameter: str | None = None
    region: str = "us"
    amplitude_url: str | None = None
    privacy_url: str | None = None
    api: str = "batch"
    min_id_length: int = DEFAULT_MIN_ID_LENGTH
    lanes: int = DEFAULT_LANES
    retry_horizon: float = 900.0
    throttle_pause: float | None = None
    max_events_per_second: int | None = None
    max_requests_per_second: int | None = None
    budget_shares: int = 1
    profile: str = "braze"
    identity_fallback: str = "none"
    s3_endpoint_url: str | None = None
    state: str = DEFAULT_STATE_PATH
    checkpoint_every: int = 5_000
    dead_letter: str = DEFAULT_DEAD_LETTER_DIR
    dead_letter_kms_key: str | None = None
    output: str | None = None
    summary_json: str | None = None
    dry_run: bool = False
    force: bool = False
    retry_failed: bool = False
    fail_on_dead_letter: bool = False
    rebind_destination: bool = False
    workers: int | None = None
    deadline_margin_s: float = 60.0
    log_level: str | None = None
    pii_salt_secret: str | None = None
    pii_salt_parameter: str | None = None
    config: str | None = None  # the TOML file the values came from, if any
    mapping: MappingOptions = field(default_factory=MappingOptions)  # repr hides the salt
    deletions: DeletionOptions = field(default_factory=DeletionOptions)  # [deletions]
    origins: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)

    def __repr__(self) -> str:
        """Every shown field; URLs without their ``user:password@`` (secrets are hidden)."""
        shown = []
        for item in fields(self):
            if not item.repr:
                continue
            value = getattr(self, item.name)
            if item.name in _URL_OPTIONS and isinstance(value, str):
                value = without_credentials(value)
            shown.append(f"{item.name}={value!r}")
        return f"Settings({', '.join(shown)})"

    def origin(self, name: str) -> str:
        """Where the value of ``name`` came from: a flag, a variable, a file line, default."""
        return self.origins.get(name, "default")

    def given(self, name: str) -> bool:
        return name in self.origins

    def without(self, *names: str) -> Settings:
        """A copy with these options back at their defaults (e.g. what a worker must not
        see: the key, the summary file)."""
        values = {name: OPTION[name].default for name in names}
        origins = {k: v for k, v in self.origins.items() if k not in names}
        return replace(self, **values, origins=origins)


def load_settings(
    place: str,
    *,
    flags: Mapping[str, Any] | None = None,
    environ: Mapping[str, str],
    environ_for_mapping: Mapping[str, str] | None = None,
) -> Settings:
    """The settings of ``place`` (a command, or ``lambda``).

    ``flags``: the values given on the command line (only those given), by option name,
    plus ``config``. ``environ``: the environment. ``environ_for_mapping``: the environment
    the ``[mapping]`` table's salt is read from (default ``environ``).
    """
    flags = dict(flags or {})
    known = {option.name: option for option in options_for(place)}
    values: dict[str, Any] = {}
    origins: dict[str, str] = {}

    config_flag = flags.pop("config", None)
    config_path = config_flag or environ.get(CONFIG_VARIABLE) or _default_config(place)
    file_values: dict[str, tuple[Any, str]] = {}
    mapping = MappingOptions()
    mapping_given: dict[str, Any] = {}
    deletions = DeletionOptions()
    if config_path:
        config_origin = ("--config" if config_flag else CONFIG_VARIABLE
                         if environ.get(CONFIG_VARIABLE) else "the working directory's")
        file_values, mapping, mapping_given, deletions = _read_file(
            place, config_path, known, environ_for_mapping or environ, config_origin)

    for name, option in known.items():
        if name in flags and flags[name] is not None:
            origin = option.flag
            values[name], origins[name] = _check(option, flags[name], origin), origin
            continue
        from_env = _from_environ(option, environ)
        if from_env is not None:
            values[name], origins[name] = from_env
            continue
        if name in file_values:
            raw, origin = file_values[name]
            values[name], origins[name] = _check(option, raw, origin), origin
        elif name in mapping_given:
            values[name], origins[name] = mapping_given[name]
    mapping = mapping.with_overrides(
        profile=values.get("profile", mapping.profile),
        identity_fallback=values.get("identity_fallback", mapping.identity_fallback),
        min_id_length=values.get("min_id_length", mapping.min_id_length),
    )
    if "min_id_length" not in values and mapping.min_id_length is not None:
        values["min_id_length"] = mapping.min_id_length
    return Settings(place=place, config=config_path, mapping=mapping, deletions=deletions,
                    origins=origins, **values)


def _from_environ(option: Option, environ: Mapping[str, str]) -> tuple[Any, str] | None:
    """The option's value from its variable (or the first alias that is set), checked."""
    for variable in option.variables:
        text = environ.get(variable)
        if text is None or text == "":
            continue
        if variable == "LEDGER_TABLE":  # a table name, as the Lambda documented it
            text = _DYNAMODB + text
        return _check(option, _parse_text(option, text, variable), variable), variable
    return None


_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def _parse_text(option: Option, text: str, origin: str) -> Any:
    """A value from a variable's text."""
    shown = "the value" if option.secret else repr(text)
    try:
        if option.kind is bool:
            lowered = text.strip().lower()
            if lowered in _TRUE | _FALSE:
                return lowered in _TRUE
            raise ValueError
        if option.kind is int:
            return int(text.replace("_", "").strip())
        if option.kind is float:
            return float(text.strip())
    except ValueError:
        expected = {bool: "true or false", int: "a whole number", float: "a number"}
        raise SettingsError(f"{origin}={shown}: not {expected[option.kind]}") from None
    return text


def _check(option: Option, value: Any, origin: str) -> Any:
    """``value`` if ``option`` takes it, else a SettingsError naming ``origin``."""
    shown = "" if option.secret else f" {value!r}"
    kind = option.kind
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        expected = {str: "text", int: "a whole number", float: "a number",
                    bool: "true or false"}[kind]
        raise SettingsError(f"{origin}:{shown} is not {expected} (option {option.flag})")
    return _in_range(option, value, origin, shown)


def _in_range(option: Option, value: Any, origin: str, shown: str) -> Any:
    kind = option.kind
    if option.choices and value not in option.choices:
        raise SettingsError(f"{origin}:{shown} is not allowed; use one of "
                            f"{', '.join(option.choices)}")
    if option.minimum is not None and value < option.minimum:
        raise SettingsError(f"{origin}:{shown} is below the minimum {option.minimum:g}")
    if option.maximum is not None and value > option.maximum:
        raise SettingsError(f"{origin}:{shown} is above the maximum {option.maximum:g}")
    if kind is str and not value.strip():
        raise SettingsError(f"{origin}: is empty; give a value or leave it out")
    return value


def _read_file(
    place: str, path: str, known: Mapping[str, Option], environ: Mapping[str, str],
    origin: str,
) -> tuple[dict[str, tuple[Any, str]], MappingOptions, dict[str, Any], DeletionOptions]:
    """The file's option values (with their lines), its [mapping] options, the values
    [mapping] gives for options that also exist on their own (profile, …), and its
    [deletions] options."""
    try:
        text = Path(path).read_text(encoding="utf-8")
        data = tomllib.loads(text)
    except FileNotFoundError:
        raise SettingsError(f"{origin} {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsError(f"{origin} {path}: cannot be read ({exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"{origin} {path}: not valid TOML ({exc})") from None
    except RecursionError:  # tomllib parses nested arrays and tables recursively
        raise SettingsError(f"{origin} {path}: nested too deeply to be read (arrays or "
                            "tables inside one another hundreds of levels deep); options "
                            "are plain values and the [mapping] and [deletions] tables") from None
    lines = text.splitlines()
    deletions = DeletionOptions()
    deletions_table = data.pop("deletions", None)
    if deletions_table is not None:
        where = f"{path} line {_line(lines, 'deletions')}"
        if not isinstance(deletions_table, dict):
            raise SettingsError(f"{where}: deletions must be a table ([deletions])")
        try:
            deletions = deletion_options(deletions_table, where)
        except ValueError as exc:
            raise SettingsError(str(exc)) from None
    table = data.pop("mapping", None)
    mapping = MappingOptions()
    mapping_given: dict[str, Any] = {}
    if table is not None:
        if not isinstance(table, dict):
            raise SettingsError(f"{path} line {_line(lines, 'mapping')}: mapping must be a "
                                "table ([mapping])")
        try:
            mapping = mapping_options(table, source=path, text=text, environ=environ)
        except MappingConfigError as exc:
            raise SettingsError(f"{origin}: {exc}") from None
        identity = table.get("identity", {})
        where = f"{path} [mapping]"
        for name, present in (("profile", "profile" in table),
                              ("identity_fallback", "fallback" in identity),
                              ("min_id_length", "min_id_length" in identity)):
            if present and name in known:
                value = {"profile": mapping.profile,
                         "identity_fallback": mapping.identity_fallback,
                         "min_id_length": mapping.min_id_length}[name]
                mapping_given[name] = (value, where)
    values: dict[str, tuple[Any, str]] = {}
    for key, value in data.items():
        name = key.replace("-", "_")
        where = f"{path} line {_line(lines, key)}"
        if name not in known:
            if name in OPTION:  # another command's: one file serves every command
                log.info("%s: %r is not for %s: ignored", where, key, _place_name(place))
                continue
            raise SettingsError(f"{where}: unknown key {key!r}; known keys for "
                                f"{_place_name(place)}: {', '.join(sorted(known))}")
        if name in mapping_given:
            raise SettingsError(f"{where}: {key} is also set in [mapping]; keep one")
        values[name] = (value, where)
    return values, mapping, mapping_given, deletions


def _default_config(place: str) -> str | None:
    """``currents-export.toml`` in the working directory, when there is one (not for the
    Lambda): only a file the user owns and no one else can write, since it can say where
    the API key is read from and where data goes."""
    path = Path(DEFAULT_CONFIG)
    if place == LAMBDA or not path.exists():
        return None
    info = path.stat()
    if info.st_uid != os.getuid():
        reason = "it belongs to another user"
    elif info.st_mode & 0o022:
        reason = "others can write it"
    else:
        return DEFAULT_CONFIG
    raise SettingsError(f"{DEFAULT_CONFIG} (read by default from the working directory): "
                        f"{reason}, and it can say where data and keys go; make it yours "
                        f"and chmod go-w {DEFAULT_CONFIG}, or pass --config explicitly")


def _place_name(place: str) -> str:
    return "the Lambda" if place == LAMBDA else f"'{place}'"


def _line(lines: list[str], key: str) -> int | str:
    pattern = re.compile(rf"^\s*(\[\s*{re.escape(key)}\s*\]|{re.escape(key)}\s*=)")
    for number, line in enumerate(lines, start=1):
        if pattern.match(line):
            return number
    return "?"


def option_table_markdown() -> str:
    """The README's option table (a test keeps the README in step with it)."""
    short = {REPLAY: "R", BACKFILL: "B", REDRIVE: "D", INSPECT: "I", STATUS: "S",
             DELETIONS: "X", DELETIONS_STATUS: "Y", LAMBDA: "L"}
    rows = ["| option | variable | default | where | what |", "|---|---|---|---|---|"]
    for option in OPTIONS:
        where = "".join(short[p] for p in PLACES if p in option.places)
        flag = f"`{option.flag}`" if option.places - {LAMBDA} else "—"
        variables = ", ".join(f"`{v}`" for v in option.variables)
        allowed = f" One of: {', '.join(option.choices)}." if option.choices else ""
        rows.append(f"| {flag} | {variables} | {option.describe_default()} | {where} | "
                    f"{option.help}{allowed} |")
    legend = ("where: R replay, B backfill, D redrive, I inspect, S status, X deletions "
              "submit, Y deletions status, L the Lambda. "
              "Command line > environment > `--config` file (`name = value`) > default.")
    return "\n".join(rows) + "\n\n" + legend + "\n"


if __name__ == "__main__":
    print(option_table_markdown(), end="")
