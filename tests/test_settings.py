"""One table of options: the command line, the environment, the TOML file and the Lambda
accept the same names, give the same defaults, and say where a bad value came from."""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from currents_export import aws_lambda, cli
from currents_export.errors import LambdaConfigError, SettingsError
from currents_export.settings import (
    LAMBDA,
    OPTIONS,
    PLACES,
    Option,
    Settings,
    load_settings,
    option_table_markdown,
    options_for,
)

ROOT = Path(__file__).resolve().parent.parent
LAMBDA_REQUIRED = {"CURRENTS_EXPORT_STATE": "dynamodb://ledger",
                   "CURRENTS_EXPORT_DEAD_LETTER": "s3://bucket/dl"}
COMMANDS = [place for place in PLACES if place != LAMBDA]


@pytest.fixture(autouse=True)
def no_settings_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The command-line cases read os.environ: start them from an empty configuration."""
    for option in OPTIONS:
        for variable in option.variables:
            monkeypatch.delenv(variable, raising=False)
    monkeypatch.delenv("CURRENTS_EXPORT_CONFIG", raising=False)


def sample(option: Option) -> Any:
    """A value unlike the default that the option accepts (valid for the Lambda too)."""
    if option.choices:
        return next(c for c in reversed(option.choices) if c != option.default)
    if option.kind is bool:
        return True
    if option.kind is int:
        return 3
    if option.kind is float:
        return 2.5
    return {"state": "dynamodb://other", "dead_letter": "s3://other/dl"}.get(
        option.name, f"value-of-{option.name}")


def as_text(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def as_toml(value: Any) -> str:
    return as_text(value) if isinstance(value, bool | int | float) else f'"{value}"'


def command_of(place: str) -> click.Command:
    """The click command of ``place`` (``deletions``: its ``submit`` subcommand; ``deletions
    status``: that one)."""
    group, _, name = place.partition(" ")
    command = cli.main.commands[group]
    if isinstance(command, click.Group):
        command = command.commands[name or "submit"]
    return command


def from_command_line(place: str, args: list[str]) -> Settings:
    """The settings the real click command builds from ``args``."""
    command = command_of(place)
    arguments = sum(1 for p in command.params if p.param_type_name == "argument")
    ctx = command.make_context(place, ["x"] * arguments + args)
    with ctx:
        return cli._settings(place, ctx.params)


def test_the_settings_type_has_exactly_the_tables_options() -> None:
    tables = {"place", "config", "mapping", "deletions", "origins"}  # not options
    names = {f.name for f in dataclasses.fields(Settings)} - tables
    assert names == {option.name for option in OPTIONS}
    defaults = {f.name: f.default for f in dataclasses.fields(Settings)}
    assert {o.name: o.default for o in OPTIONS} == {o.name: defaults[o.name] for o in OPTIONS}


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_its_options_with_help(command: str) -> None:
    params = {p.name: p for p in command_of(command).params}
    for option in options_for(command):
        param = params[option.name]
        assert option.flag in param.opts
        assert param.default is None  # the table's default applies, not click's
        assert param.help and len(param.help) > 20
    assert "config" in params


@pytest.mark.parametrize("place", PLACES)
def test_defaults_are_the_same_everywhere(place: str) -> None:
    settings = (aws_lambda.lambda_settings(LAMBDA_REQUIRED) if place == LAMBDA
                else load_settings(place, environ={}))
    for option in options_for(place):
        if place == LAMBDA and option.name in ("state", "dead_letter"):
            continue  # required there
        assert getattr(settings, option.name) == option.default, option.name
        if place != LAMBDA:
            assert getattr(from_command_line(place, []), option.name) == option.default
    assert settings.checkpoint_every == 5_000  # the CLI said 10,000 and the Lambda 5,000


@pytest.mark.parametrize("option", OPTIONS, ids=lambda o: o.name)
def test_each_option_is_read_the_same_from_flag_variable_file_and_lambda(
    option: Option, tmp_path: Path
) -> None:
    value = sample(option)
    config = tmp_path / "settings.toml"
    config.write_text(f"# a comment\n{option.name} = {as_toml(value)}\n")
    seen: dict[str, Any] = {}
    for place in sorted(option.places):
        if place == LAMBDA:
            required = {k: v for k, v in LAMBDA_REQUIRED.items() if k != option.variable}
            for variable in option.variables:
                text = as_text(value).removeprefix("dynamodb://") if variable == "LEDGER_TABLE" \
                    else as_text(value)
                settings = aws_lambda.lambda_settings({**required, variable: text})
                seen[f"lambda {variable}"] = getattr(settings, option.name)
            settings = aws_lambda.lambda_settings(
                {**required, "CURRENTS_EXPORT_CONFIG": str(config)})
            seen["lambda file"] = getattr(settings, option.name)
            continue
        flag = [option.flag] if option.kind is bool else [option.flag, as_text(value)]
        seen[f"{place} flag"] = getattr(from_command_line(place, flag), option.name)
        env = load_settings(place, environ={option.variable: as_text(value)})
        seen[f"{place} variable"] = getattr(env, option.name)
        assert env.origin(option.name) == option.variable
        in_file = load_settings(place, environ={"CURRENTS_EXPORT_CONFIG": str(config)})
        seen[f"{place} file"] = getattr(in_file, option.name)
        assert in_file.origin(option.name) == f"{config} line 2"
    assert seen and set(seen.values()) == {value}, seen


def test_command_line_beats_environment_beats_file_beats_default(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text("lanes = 2\nregion = \"eu\"\napi = \"http\"\n")
    environ = {"CURRENTS_EXPORT_CONFIG": str(config), "CURRENTS_EXPORT_LANES": "3",
               "AMPLITUDE_API": "batch"}
    settings = load_settings("replay", flags={"lanes": 4}, environ=environ)
    assert (settings.lanes, settings.api, settings.region, settings.retry_horizon) == \
        (4, "batch", "eu", 900.0)
    assert settings.origin("lanes") == "--lanes"
    assert settings.origin("api") == "AMPLITUDE_API"
    assert settings.origin("region") == f"{config} line 2"
    assert settings.origin("retry_horizon") == "default"
    assert load_settings("replay", environ=environ).lanes == 3
    ours = load_settings("replay", environ={**environ, "CURRENTS_EXPORT_API": "http"})
    assert ours.api == "http"  # the option's own variable before the older alias


@pytest.mark.parametrize(("environ", "file", "expected"), [
    ({"CURRENTS_EXPORT_LANES": "many"}, "", "CURRENTS_EXPORT_LANES='many': not a whole number"),
    ({"CURRENTS_EXPORT_LANES": "0"}, "", "CURRENTS_EXPORT_LANES: 0 is below the minimum 1"),
    ({"AMPLITUDE_REGION": "mars"}, "", "AMPLITUDE_REGION: 'mars' is not allowed; use one of "
                                       "us, eu"),
    ({"CURRENTS_EXPORT_DRY_RUN": "perhaps"}, "", "CURRENTS_EXPORT_DRY_RUN='perhaps': not true "
                                                 "or false"),
    ({}, "\n\nlanes = 65\n", "line 3: 65 is above the maximum 64"),
    ({}, "lanes = \"four\"\n", "line 1: 'four' is not a whole number (option --lanes)"),
    ({}, "lane = 4\n", "line 1: unknown key 'lane'; known keys for 'replay': amplitude_url, api,"),
    ({}, "profile = \"plain\"\n[mapping]\nprofile = \"braze\"\n",
     "line 1: profile is also set in [mapping]; keep one"),
    ({}, "lanes = [", "not valid TOML"),
])
def test_a_bad_value_names_where_it_came_from(
    environ: dict[str, str], file: str, expected: str, tmp_path: Path
) -> None:
    config = tmp_path / "c.toml"
    config.write_text(file)
    with pytest.raises(SettingsError) as info:
        load_settings("replay", environ={**environ, "CURRENTS_EXPORT_CONFIG": str(config)})
    assert expected in str(info.value)
    if "line" in expected:
        assert str(config) in str(info.value)


def test_a_bad_flag_is_named_and_exits_2(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli.main, ["replay", str(tmp_path), "--lanes", "0"])
    assert result.exit_code == 2 and "--lanes" in result.output
    config = tmp_path / "c.toml"
    config.write_text("lanes = 0\n")
    result = CliRunner().invoke(cli.main, ["replay", str(tmp_path), "--config", str(config)])
    assert result.exit_code == 2
    assert f"Error: {config} line 1: 0 is below the minimum 1" in result.output
    result = CliRunner().invoke(cli.main, ["replay", str(tmp_path), "--config", "nowhere.toml"])
    assert result.exit_code == 2 and "--config nowhere.toml: no such file" in result.output


def test_a_secret_value_is_never_repeated_in_a_message(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text("api_key = 123456789\n")
    with pytest.raises(SettingsError) as info:
        load_settings("replay", environ={"CURRENTS_EXPORT_CONFIG": str(config)})
    assert "123456789" not in str(info.value) and "line 1" in str(info.value)
    settings = load_settings("replay", environ={"AMPLITUDE_API_KEY": "k-SECRET-9"})
    assert settings.api_key == "k-SECRET-9" and "k-SECRET-9" not in repr(settings)
    deletions = load_settings("deletions", environ={"AMPLITUDE_SECRET_KEY": "s-SECRET-1"})
    assert deletions.secret_key == "s-SECRET-1" and "s-SECRET-1" not in repr(deletions)


def test_the_lambdas_documented_names_still_work() -> None:
    settings = aws_lambda.lambda_settings({
        "LEDGER_TABLE": "ledger", "CURRENTS_EXPORT_DEAD_LETTER": "s3://b/dl",
        "AMPLITUDE_REGION": "eu", "AMPLITUDE_API": "http", "AMPLITUDE_URL": "http://x",
        "CURRENTS_EXPORT_DEADLINE_MARGIN_S": "30", "CURRENTS_EXPORT_LANES": "4"})
    assert (settings.state, settings.region, settings.api, settings.amplitude_url,
            settings.deadline_margin_s, settings.lanes) == \
        ("dynamodb://ledger", "eu", "http", "http://x", 30.0, 4)
    with pytest.raises(LambdaConfigError, match="CURRENTS_EXPORT_STATE=dynamodb"):
        aws_lambda.lambda_settings({"CURRENTS_EXPORT_DEAD_LETTER": "s3://b/dl"})
    with pytest.raises(LambdaConfigError, match="CURRENTS_EXPORT_LANES"):
        aws_lambda.lambda_settings({**LAMBDA_REQUIRED, "CURRENTS_EXPORT_LANES": "x"})


def test_the_readme_option_table_is_generated_from_the_table() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(r"<!-- options:begin -->\n(.*?)<!-- options:end -->", readme, re.S)
    assert match is not None, "README.md lost its options markers"
    assert match.group(1) == option_table_markdown(), (
        "README.md's option table is out of date: replace it with the output of "
        "python -m currents_export.settings")
    for option in OPTIONS:
        assert f"`{option.variable}`" in match.group(1)


def test_the_rate_budget_is_one_option_everywhere_and_each_run_takes_its_share(
    tmp_path: Path,
) -> None:
    from currents_export.compose import build_pacer
    from currents_export.stopping import Stop

    config = tmp_path / "config.toml"
    config.write_text("max_requests_per_second = 95\n", encoding="utf-8")
    from_everywhere = load_settings(
        "replay", flags={"max_events_per_second": 950, "config": str(config)},
        environ={"CURRENTS_EXPORT_BUDGET_SHARES": "2"})
    lambda_settings = aws_lambda.lambda_settings(
        {**LAMBDA_REQUIRED, "CURRENTS_EXPORT_MAX_EVENTS_PER_SECOND": "750",
         "CURRENTS_EXPORT_BUDGET_SHARES": "10"})

    shared = build_pacer(from_everywhere, Stop()).budget
    per_invocation = build_pacer(lambda_settings, Stop()).budget
    alone = build_pacer(load_settings("redrive", environ={}), Stop()).budget

    assert (shared.events_per_second, shared.requests_per_second) == (475.0, 47.5)
    assert from_everywhere.origin("max_requests_per_second").endswith("line 1")
    assert (per_invocation.events_per_second, per_invocation.requests_per_second) == (75.0, None)
    assert (alone.events_per_second, alone.requests_per_second) == (None, None)


@pytest.mark.parametrize("value", ["0", "-5", "fast"])
def test_a_bad_budget_names_its_variable(value: str) -> None:
    with pytest.raises(SettingsError, match="CURRENTS_EXPORT_MAX_EVENTS_PER_SECOND"):
        load_settings("backfill", environ={"CURRENTS_EXPORT_MAX_EVENTS_PER_SECOND": value})


@pytest.mark.parametrize("nested", [
    "lanes = " + "[" * 5_000 + "]" * 5_000 + "\n",  # arrays in arrays
    "[mapping]\nproperties = " + "{a = " * 2_000 + "1" + "}" * 2_000 + "\n",  # inline tables
])
def test_a_config_file_nested_too_deeply_is_a_settings_error_naming_it(
    tmp_path: Path, nested: str
) -> None:
    config = tmp_path / "deep.toml"
    config.write_text(nested, encoding="utf-8")
    with pytest.raises(SettingsError) as info:
        load_settings("replay", flags={"config": str(config)}, environ={})
    assert str(config) in str(info.value) and "nested too deeply" in str(info.value)
    result = CliRunner().invoke(cli.main, ["replay", str(tmp_path), "--config", str(config)])
    assert result.exit_code == 2, result.output
    assert f"Error: --config {config}: nested too deeply" in result.output
    assert "this is a bug" not in result.output
    # The Lambda reads the file for the salt's variable first: the same answer.
    with pytest.raises(LambdaConfigError, match="nested too deeply"):
        aws_lambda.lambda_settings(
            {**LAMBDA_REQUIRED, "CURRENTS_EXPORT_CONFIG": str(config),
             "CURRENTS_EXPORT_PII_SALT_SECRET": "pii-salt"},
            client_factory=lambda service, **_: _SaltSecret())


class _SaltSecret:
    """Secrets Manager, as far as the salt's read goes."""

    def get_secret_value(self, **_: Any) -> dict[str, str]:
        return {"SecretString": "a-salt-of-sixteen-characters"}


def test_the_rebind_option_is_off_by_default_and_reaches_every_place_that_writes() -> None:
    for place in ("replay", "backfill", "deletions"):
        assert load_settings(place, environ={}).rebind_destination is False
        flagged = load_settings(place, flags={"rebind_destination": True}, environ={})
        assert flagged.rebind_destination and flagged.origin("rebind_destination") == (
            "--rebind-destination")
    lambda_settings = aws_lambda.lambda_settings(
        {**LAMBDA_REQUIRED, "CURRENTS_EXPORT_REBIND_DESTINATION": "true"})
    assert lambda_settings.rebind_destination
    # redrive keeps no ledger; status only reads one
    assert "rebind_destination" not in {o.name for o in options_for("redrive")}
    assert "rebind_destination" not in {o.name for o in options_for("status")}


ONE_FILE = """\
lanes = 4
api = "http"
max_events_per_second = 900
state = "state.sqlite"
dead_letter = "dead-letter"
deadline_margin_s = 30
[mapping]
profile = "plain"
[deletions]
grace_period_s = 3600
"""


@pytest.mark.parametrize("place", COMMANDS)
def test_one_config_file_serves_every_command(
    place: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = tmp_path / "currents-export.toml"
    config.write_text(ONE_FILE)
    with caplog.at_level("INFO", logger="currents_export.settings"):
        settings = load_settings(place, environ={"CURRENTS_EXPORT_CONFIG": str(config)})
    mine = {option.name for option in options_for(place)}
    if "lanes" in mine:
        assert settings.lanes == 4 and settings.origin("lanes").endswith("line 1")
    if "state" in mine:
        assert settings.state == "state.sqlite"
    ignored = [r.getMessage() for r in caplog.records if "ignored" in r.getMessage()]
    assert any("'deadline_margin_s' is not for" in line for line in ignored)  # the Lambda's
    if "lanes" not in mine:
        assert any("'lanes' is not for" in line for line in ignored)


def test_an_unknown_key_is_still_an_error_for_every_command(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text("lanes = 4\nlane = 4\n")
    for place in COMMANDS:
        with pytest.raises(SettingsError, match="line 2: unknown key 'lane'"):
            load_settings(place, environ={"CURRENTS_EXPORT_CONFIG": str(config)})


def test_the_working_directorys_file_is_read_by_default_only_when_it_is_the_users_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert load_settings("replay", environ={}).lanes != 4  # none there: the defaults
    config = tmp_path / "currents-export.toml"
    config.write_text("lanes = 4\n")
    os.chmod(config, 0o644)
    settings = load_settings("replay", environ={})
    assert settings.lanes == 4 and settings.config == "currents-export.toml"
    assert load_settings("status", environ={}).config == "currents-export.toml"
    explicit = tmp_path / "other.toml"
    explicit.write_text("lanes = 2\n")
    assert load_settings("replay", flags={"config": str(explicit)}, environ={}).lanes == 2
    os.chmod(config, 0o664)  # others (its group) can write it: it could redirect the data
    with pytest.raises(SettingsError, match=r"others can write it.*chmod go-w"):
        load_settings("replay", environ={})
    assert aws_lambda.lambda_settings(LAMBDA_REQUIRED).config is None  # never the Lambda's
