"""The [mapping] configuration, through the full replay path into the emulator."""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
from pathlib import Path

import orjson
import pytest

from currents_export.aws_lambda import lambda_settings
from currents_export.errors import LambdaConfigError
from currents_export.kit.emulator import Emulator
from currents_export.kit.fixtures import FixtureFile
from currents_export.mapping.reference import render_reference
from tests.support import REPO_ROOT
from tests.support.configs import ENV, EXAMPLES, SALT, replay_config, write
from tests.support.emulator import raw_events, stored_events
from tests.support.runs import assert_balanced, read_all, run_cli

EMAIL = re.compile(rb"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
PHONE = re.compile(rb"\+\d{8,15}")

Fixtures = tuple[Path, list[FixtureFile]]


def files_of(fixtures: Fixtures, *event_types: str) -> list[Path]:
    return [f.path for f in fixtures[1] if f.event_type in event_types]


# ---------------------------------------------------------------- the example configurations


def test_privacy_first_sends_no_email_or_phone_anywhere(
    emulator: Emulator, all_types_fixtures: Fixtures, tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    source = orjson.dumps([record for _, record in read_all(all_types_fixtures[1])])
    assert EMAIL.search(source) and PHONE.search(source)  # there is something to hide
    caplog.set_level(logging.DEBUG)
    result, summary = replay_config(emulator, tmp_path, [all_types_fixtures[0]],
                                    EXAMPLES / "privacy-first.toml", "-vv")
    assert result.exit_code == 0, result.output
    assert_balanced(summary)
    assert summary["delivered"] > 1000
    received = raw_events(emulator)
    for text in (received, result.output.encode(), caplog.text.encode()):
        assert not EMAIL.search(text)
        assert not PHONE.search(text)
    users = {e["user_id"] for e in stored_events(emulator) if "user_id" in e}
    assert users and all(re.fullmatch("[0-9a-f]{64}", u) for u in users)


def test_hashed_ids_are_a_salted_hmac_stable_across_runs(
    emulator: Emulator, all_types_fixtures: Fixtures, tmp_path: Path
) -> None:
    config = write(tmp_path, '[mapping.pii]\nexternal_user_id = "hash"\n')
    paths = files_of(all_types_fixtures, "users.behaviors.CustomEvent")
    replay_config(emulator, tmp_path, paths, config)
    records = {r["id"]: r for _, r in read_all([f for f in all_types_fixtures[1]
                                                if f.path in paths])}
    events = stored_events(emulator)
    hashed = [e for e in events if records[e["insert_id"]]["external_user_id"]]
    assert hashed
    for event in hashed:
        original = records[event["insert_id"]]["external_user_id"].encode()
        assert event["user_id"] == hmac.new(SALT.encode(), original, hashlib.sha256).hexdigest()


def test_clean_names_example(
    emulator: Emulator, all_types_fixtures: Fixtures, tmp_path: Path
) -> None:
    types = ("users.behaviors.CustomEvent", "users.behaviors.app.SessionStart",
             "users.messages.email.Open", "users.behaviors.Purchase")
    result, summary = replay_config(emulator, tmp_path, files_of(all_types_fixtures, *types),
                                    EXAMPLES / "clean-names.toml")
    assert result.exit_code == 0, result.output
    assert_balanced(summary)
    events = stored_events(emulator)
    names = {e["event_type"] for e in events}
    assert {"Session Start", "Email Opened", "Purchase"} <= names
    assert not any(name.startswith("[Appboy]") for name in names)
    assert all(e["library"] == "currents-export" for e in events)
    sessions = [e for e in events if e["event_type"] == "Session Start"]
    assert all("app_group_id" not in e["event_properties"] for e in sessions)
    assert any("platform" in e for e in sessions)  # device fields at the top level
    assert all("platform" not in e["event_properties"] for e in events)
    opens = [e for e in events if e["event_type"] == "Email Opened"]
    assert any("campaign" in e["event_properties"] for e in opens)
    assert all("campaign_name" not in e["event_properties"] for e in opens)


def test_only_some_types_example_skips_the_rest_and_syncs_profiles(
    emulator: Emulator, all_types_fixtures: Fixtures, tmp_path: Path
) -> None:
    result, summary = replay_config(emulator, tmp_path, [all_types_fixtures[0]],
                                    EXAMPLES / "only-some-types.toml")
    assert result.exit_code == 0, result.output
    assert_balanced(summary)
    assert summary["skipped"]["event_type_disabled"] > 80 * 50
    events = stored_events(emulator)
    names = {e["event_type"] for e in events}
    custom = {name for name in names if name.startswith("[Appboy] [Custom Event] ")}
    assert custom
    assert names - custom == {"[Appboy] Purchase", "[Appboy] Session Start", "$identify"}
    identifies = [e for e in events if e["event_type"] == "$identify"]
    assert identifies and all(set(e["user_properties"]) == {"$set"} for e in identifies)
    assert all("event_properties" not in e for e in identifies)
    assert any("first_name" in e["user_properties"]["$set"] for e in identifies)


def test_backfill_example_marks_every_event(
    emulator: Emulator, all_types_fixtures: Fixtures, tmp_path: Path
) -> None:
    paths = files_of(all_types_fixtures, "users.behaviors.Purchase", "users.profile.Update")
    result, _ = replay_config(emulator, tmp_path, paths, EXAMPLES / "backfill.toml")
    assert result.exit_code == 0, result.output
    events = stored_events(emulator)
    assert events and all(e["$skip_user_properties_sync"] is True for e in events)


# ---------------------------------------------------------------- each option on its own


def test_per_type_enable_name_drop_and_rename(
    emulator: Emulator, all_types_fixtures: Fixtures, tmp_path: Path
) -> None:
    config = write(tmp_path, """
[mapping.events."users.behaviors.CustomEvent"]
event_type = "custom: {name}"
drop = ["coupon", "ad_id"]
rename = { score = "Score", platform = "Platform" }

[mapping.events."users.behaviors.app.SessionEnd"]
enabled = false
""")
    types = ("users.behaviors.CustomEvent", "users.behaviors.app.SessionEnd")
    result, summary = replay_config(emulator, tmp_path, files_of(all_types_fixtures, *types),
                                    config)
    assert result.exit_code == 0, result.output
    assert_balanced(summary)
    session_ends = sum(f.records for f in all_types_fixtures[1]
                       if f.event_type == "users.behaviors.app.SessionEnd")
    assert summary["skipped"]["event_type_disabled"] + summary["duplicates"] >= session_ends
    events = stored_events(emulator)
    assert events and all(e["event_type"].startswith("custom: ") for e in events)
    properties = [e["event_properties"] for e in events]
    assert not any("ad_id" in p or "[Custom event property] coupon" in p for p in properties)
    assert any("Score" in p for p in properties) and any("Platform" in p for p in properties)
    assert not any("[Custom event property] score" in p or "platform" in p for p in properties)


def test_identity_rules(emulator: Emulator, all_types_fixtures: Fixtures, tmp_path: Path) -> None:
    paths = files_of(all_types_fixtures, "users.behaviors.CustomEvent")
    _, before = replay_config(emulator, tmp_path / "a", paths, None)
    assert before["skipped"].get("no_identity", 0) > 0
    config = write(tmp_path, '[mapping.identity]\nfallback = "braze_id"\nmin_id_length = 12\n')
    result, after = replay_config(emulator, tmp_path / "b", paths, config, "--force")
    assert result.exit_code == 0, result.output
    assert_balanced(after)
    assert "no_identity" not in after["skipped"]
    assert after["dead_lettered"]["invalid_id"] > 0  # ids shorter than 12 characters


def test_subscription_changes_become_identify(
    emulator: Emulator, all_types_fixtures: Fixtures, tmp_path: Path
) -> None:
    config = write(tmp_path, "[mapping.user_properties]\nsubscription_changes = true\n")
    types = ("users.behaviors.subscription.GlobalStateChange",
             "users.behaviors.subscriptiongroup.StateChange")
    result, _ = replay_config(emulator, tmp_path, files_of(all_types_fixtures, *types), config)
    assert result.exit_code == 0, result.output
    events = stored_events(emulator)
    assert events and all(e["event_type"] == "$identify" for e in events)
    keys = {k for e in events for k in e["user_properties"]["$set"]}
    assert any(k.startswith("subscription_group_") for k in keys)
    assert any(k.endswith("_subscribe") for k in keys)


# ---------------------------------------------------------------- bad configurations


@pytest.mark.parametrize(("text", "named"), [
    ('[mapping]\nprofil = "plain"\n', "mapping.profil: unknown key"),
    ('[mapping]\nbackfill = "yes"\n', "mapping.backfill: must be true or false"),
    ('[mapping]\nevent_types = ["users.behaviors.Nope"]\n', "'users.behaviors.Nope'"),
    ('[mapping.events."users.Nope"]\nenabled = false\n', 'mapping.events."users.Nope"'),
    ('[mapping.events."users.behaviors.app.SessionStart"]\ndrop = ["nope"]\n', "'nope'"),
    ('[mapping.pii]\nemail_address = "scramble"\n', "mapping.pii.email_address"),
    ('[mapping.pii]\nplatform = "drop"\n', "mapping.pii.platform: neither a class"),
    ('[mapping.identity]\nmin_id_length = 0\n', "mapping.identity.min_id_length"),
    ('[mapping]\ndrop = ["external_user_id"]\n', "cannot be dropped"),
])
def test_bad_configuration_exits_2_naming_the_key_and_line(
    tmp_path: Path, text: str, named: str
) -> None:
    config = write(tmp_path, "# comment\n" + text)
    result = run_cli("replay", str(tmp_path), "--dry-run", "--config", str(config),
                     "--state", str(tmp_path / "s.sqlite"), env=ENV)
    assert result.exit_code == 2
    assert named in result.output
    assert re.search(r"line [23]\b", result.output), result.output


def test_hashing_without_a_salt_names_the_variable(tmp_path: Path) -> None:
    config = write(tmp_path, '[mapping.pii]\nemail_address = "hash"\n')
    result = run_cli("replay", str(tmp_path), "--dry-run", "--config", str(config),
                     env={"CURRENTS_EXPORT_PII_SALT": ""})
    assert result.exit_code == 2
    assert "CURRENTS_EXPORT_PII_SALT" in result.output


# ---------------------------------------------------------------- reference, inspect, Lambda


def test_mapping_reference_matches_the_code() -> None:
    document = (REPO_ROOT / "docs" / "mapping.md").read_text(encoding="utf-8")
    assert document == render_reference(), (
        "docs/mapping.md is out of date: python -m currents_export.mapping.reference "
        "> docs/mapping.md"
    )


def test_inspect_shows_the_mapping_under_the_configuration(
    all_types_fixtures: Fixtures, tmp_path: Path
) -> None:
    [path, *_] = files_of(all_types_fixtures, "users.profile.Update")
    result = run_cli("inspect", str(path), "--samples", "1", "--config",
                     str(EXAMPLES / "privacy-first.toml"), env=ENV)
    assert result.exit_code == 0, result.output
    mapping = orjson.loads(result.output)["mapping"]
    goes_to = {f["field"]: f["goes_to"] for f in mapping["fields"]}
    assert mapping["event_type"] == "[Appboy] Profile Update"
    assert goes_to["email_address"] == "dropped (personal data)"
    assert goes_to["external_user_id"] == "user_id (salted hash)"
    assert goes_to["custom_attributes"] == (
        "event_properties.custom_attributes (under [mapping.properties])")
    # privacy-first scans every kept text, unclassified fields included (issue 12 review)
    assert goes_to["timezone"] == (
        "event_properties.timezone (e-mail addresses and phone numbers hashed)")
    classes = {f["field"]: f["class"] for f in mapping["fields"]}
    assert classes["email_address"] == "pii"
    assert classes["custom_attributes"] == "properties"
    assert classes["timezone"] is None


def test_lambda_reads_the_configuration_file(tmp_path: Path) -> None:
    env = {"CURRENTS_EXPORT_STATE": "dynamodb://t", "CURRENTS_EXPORT_DEAD_LETTER": "s3://b/p",
           "CURRENTS_EXPORT_CONFIG": str(EXAMPLES / "clean-names.toml")}
    settings = lambda_settings(env)
    assert settings.profile == "plain"
    assert settings.mapping.device_fields == "top_level"
    env["CURRENTS_EXPORT_CONFIG"] = str(write(tmp_path, '[mapping]\nprofile = "raw"\n'))
    with pytest.raises(LambdaConfigError, match=r"CURRENTS_EXPORT_CONFIG: .*mapping.profile"):
        lambda_settings(env)
