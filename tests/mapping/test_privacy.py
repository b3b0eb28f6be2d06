"""The privacy policy over free text, URLs, tokens and custom properties (issue 12, item 1).

The proof: e-mail addresses and phone numbers planted in every free-text, URL, token and
user-agent field and deep inside custom properties of all 94 types, replayed under
examples/privacy-first.toml, appear nowhere — not in what Amplitude stored, the output and
logs at -vv, the --output file, ``inspect`` or the dead letter — while events are still
delivered and users stay distinguishable.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import fastavro
import httpx
import orjson
import pytest

from currents_export.currents.schemas import (
    CLASS_KEYS,
    FIELD_CLASSES,
    PROPERTIES,
    event_type_fields,
    field_class,
    known_event_types,
    pii_fields,
    writer_schema,
)
from currents_export.errors import MappingConfigError
from currents_export.kit.emulator import Emulator
from currents_export.kit.fixtures import generate_fixtures
from currents_export.mapping import Mapped, MappingOptions, Rejected, mapper_for
from currents_export.mapping.mapper import redacted_record
from currents_export.mapping.pii import (
    DROP,
    MAX_DEPTH,
    Redactor,
    find_personal,
    hmac_hasher,
    schema_outline,
    strip_query,
)
from currents_export.settings.mapping import load_mapping_file, mapping_options
from tests.support.configs import ENV, EXAMPLES, SALT, replay_config, write
from tests.support.emulator import raw_events, stored_events
from tests.support.runs import run_cli

PRIVACY_FIRST = EXAMPLES / "privacy-first.toml"
HASH = hmac_hasher(SALT.encode())


def hashed(text: str) -> str:
    return hmac.new(SALT.encode(), text.encode(), hashlib.sha256).hexdigest()


# ---------------------------------------------------------------- the classification

# Every string field of the catalogue that is deliberately left unclassified, after review:
# ids, names chosen by the customer in the dashboard, enumerations, codes, hosts and
# domains. A new field fails this test until it is classified or added here.
REVIEWED_UNCLASSIFIED = frozenset({
    "abort_type", "action", "activity_attributes_type", "activity_id", "ad_id_type",
    "agent_id", "agent_name", "app_group_api_id", "app_group_id", "app_id",
    "banner_placement_id", "browser", "button_action_type", "button_id", "campaign_id",
    "campaign_name", "canvas_api_id", "canvas_entry_id", "canvas_id", "canvas_name",
    "canvas_step_api_id", "canvas_step_id", "canvas_step_message_variation_id",
    "canvas_step_name", "canvas_variation_api_id", "canvas_variation_id",
    "canvas_variation_name", "card_id", "carrier", "catalog_id", "category", "channel",
    "combination_token", "content_card_id", "content_optimizer_step_id",
    "conversion_behavior", "currency", "device_class", "device_id", "device_model",
    "device_os", "dispatch_id", "element_type", "esp", "exit_reason",
    "experiment_split_id", "experiment_split_name", "experiment_step_id",
    "feature_flag_id_name", "flow_id", "from_domain", "from_phone_number", "from_rcs_sender",
    "host", "id", "in_reply_to", "inbound_phone_number", "interaction_type",
    "invocation_id", "invocation_source", "ip_pool", "line_channel_id", "line_channel_name",
    "link_alias", "link_id", "live_activity_event_outcome", "live_activity_event_type",
    "machine_open", "mailbox_provider", "media_id", "message_id", "message_variation_id",
    "message_variation_name", "model_name", "model_provider", "name", "next_step_id",
    "orphaned_by_id", "os_version", "platform", "product_id", "progression_type",
    "provider_error_code", "provider_request_id", "push_token_device_id",
    "push_token_state_change_type", "recipient_domain", "request_id", "resolution",
    "retry_type", "sdk_version", "send_id", "sending_ip", "session_id", "source",
    "state_change_source", "subscription_group_id", "subscription_status",
    "suspected_bot_click_reason", "timezone", "to_rcs_sender", "tool_call_id", "tool_name",
    "update_source", "version", "webhook_failure_source",
})


def every_field() -> dict[str, str]:
    return {spec.name: spec.avro_type for t in known_event_types()
            for spec in event_type_fields(t)}


def test_every_string_field_is_classified_or_reviewed() -> None:
    fields = every_field()
    assert set(FIELD_CLASSES) <= set(fields)
    strings = {n for n, kind in fields.items() if "string" in kind}
    unclassified = {n for n in strings if field_class(n) is None}
    assert unclassified == REVIEWED_UNCLASSIFIED, (
        f"new: {sorted(unclassified - REVIEWED_UNCLASSIFIED)}; "
        f"gone: {sorted(REVIEWED_UNCLASSIFIED - unclassified)}"
    )
    # Braze's own marks are never lost: a marked field is pii or a stricter class
    assert all(field_class(n) is not None for n in pii_fields())


def test_classification_covers_the_fields_the_issue_names() -> None:
    expected = {
        "message_body": "free_text", "quick_reply_text": "free_text",
        "raw_response": "free_text", "tool_arguments": "free_text", "input": "free_text",
        "output": "free_text", "flow_response_json": "free_text", "bounce_reason": "free_text",
        "url": "url", "short_url": "url", "media_urls": "url", "endpoint_url": "url",
        "push_token": "device_token", "web_push_token_user_auth": "device_token",
        "user_agent": "user_agent", "properties": PROPERTIES, "custom_attributes": PROPERTIES,
        "email_address": "pii", "bsuid": "pii",
    }
    assert {name: field_class(name) for name in expected} == expected


# ---------------------------------------------------------------- the scan

FLAGGED = [
    "a@b.com", "Zoë.Ünal+tag@exämple.co.uk", "first.last%40example.com",
    "+15551234567", "+1 555 123 4567", "+1 (555) 987-6543", "+44 7700 900123",
    "+33 6 12 34 56 78", "+49 (0)30 1234567", "%2B15551234567",
    "(555) 123-4567", "555-123-4567", "555.123.4567", "1-800-555-0199",
    "07700 900123", "020 7946 0958", "06 12 34 56 78", "01-23-45-67-89", "(030) 1234567",
    "0044 20 7946 0958",
    "+1234567890", "+1\u2011555\u2011123\u20114567", "+1\u2009555\u2009123\u20094567",
]
NOT_FLAGGED = [
    "12.99", "1999", "-42", "1700000000", "1700000000123", "123456789", "15551234567",
    "07700900123", "2024-01-15", "2024-01-15T10:00:00Z", "2024-01-15T10:00:00+0000",
    "10:30", "15.01.2024", "01.02.2024 10:30", "550e8400-e29b-41d4-a716-446655440000",
    "SKU-00042", "ORD-12345678", "1.2.3", "v2024.01.15", "192.168.1.1", "10.0.0.1",
    "0.123456789", "3.14159265358", "1,234,567", "12 345 678", "1 299,00 EUR",
    "+100 points", "qty 3, 12 items", "user@localhost", "@handle", "a@b", "50% off",
    # signed decimals and counts, retina image names (review of issue 12, item 7)
    "+48.8584123", "+1234567.89", "+12345678", "+2.2945123", "lat +48.8584123, lon +2.29",
    "logo@2x.png", "icon@3x.webp", "hero@1.5x.JPG", "https://cdn.example.com/img/a@2x.svg",
    # "+" between words and numbers that is not form encoding
    "a+b", "C++ and 1+1=2", "50%+ off", "size=10+2",
]


# An address glued to more text is matched whole (review of issue 12, item 4).
GLUED = [
    ("jane@example.com_2024", "jane@example.com", "_2024"),
    ("jane@gmail.com-1699999999", "jane@gmail.com", "-1699999999"),
    ("ref:jane@example.com1", "jane@example.com", "1"),
    ("jane@mail.eu.example.com-7", "jane@mail.eu.example.com", "-7"),
    ("x jane@sub.example.co.uk_a", "jane@sub.example.co.uk", "_a"),
]


@pytest.mark.parametrize(("text", "address", "rest"), GLUED)
def test_an_address_glued_to_more_text_is_matched_whole(
    text: str, address: str, rest: str
) -> None:
    assert find_personal(text) == [address]
    redacted = Redactor("hash", HASH).text(text)
    assert redacted.endswith(hashed(address) + rest)
    assert "@" not in redacted and "example" not in redacted


@pytest.mark.parametrize("text", FLAGGED)
def test_the_scan_flags(text: str) -> None:
    assert find_personal(text) == [text]
    assert find_personal(f"contact: {text}, thanks") == [text]


@pytest.mark.parametrize("text", NOT_FLAGGED)
def test_the_scan_leaves_ordinary_values(text: str) -> None:
    assert find_personal(text) == []
    assert Redactor("hash", HASH).text(text) == text


def test_scan_hash_and_drop_on_whole_and_embedded_values() -> None:
    hashing, dropping = Redactor("hash", HASH), Redactor("drop", None)
    assert hashing.text("a@b.com") == hashed("a@b.com")
    assert hashing.text(" +1 555 123 4567 ") == hashed("+15551234567")  # normalised
    assert dropping.text("a@b.com") is DROP
    text = "write a@b.com or call (555) 123-4567 today"
    assert hashing.text(text) == (f"write {hashed('a@b.com')} or call "
                                  f"{hashed('+15551234567')} today")
    assert dropping.text(text) == "write  or call  today"
    assert Redactor("off", None).text(text) == text
    # URL-encoded text is decoded when it hides an address or a number
    assert hashing.text("/u?tel=%2B1%20%28555%29%20987-6543") == (
        f"/u?tel={hashed('+15559876543')}")
    assert hashing.text("https://x.com/caf%C3%A9?q=50%25") == "https://x.com/caf%C3%A9?q=50%25"


def test_properties_walk_nested_values_keys_and_lists() -> None:
    redactor = Redactor("hash", HASH, drop_keys=["email", "first_name"],
                        hash_keys=["customer_id"])
    value = {
        "E-Mail": "x@y.org", "firstName": "Zoë", "Customer_ID": 42,
        "orders": [{"notes": ["call +44 7700 900123", {"deep": {"contact": "a@b.com"}}],
                    "price": 12.99, "ts": 1700000000, "email": "z@z.io"}],
        "empty": None, "ok": True,
    }
    assert redactor.value(value) == {
        "Customer_ID": hashed("42"),
        "orders": [{"notes": [f"call {hashed('+447700900123')}",
                              {"deep": {"contact": hashed("a@b.com")}}],
                    "price": 12.99, "ts": 1700000000}],
        "empty": None, "ok": True,
    }
    dropping = Redactor("drop", None)
    assert dropping.value(["a@b.com", "keep", ["555-123-4567"], {"k": "a@b.com"}]) == (
        ["keep", [], {}])


def test_properties_deeper_than_the_limit_are_dropped() -> None:
    deep: Any = "a@b.com"
    for _ in range(200):
        deep = [deep]
    kept = Redactor("off", None, drop_keys=["other"]).value({"x": deep})
    assert "a@b.com" not in orjson.dumps(kept).decode()  # below the limit: left out
    assert orjson.dumps(kept).decode().count("[") == MAX_DEPTH - 1


@pytest.mark.parametrize(("url", "stripped"), [
    ("https://shop.example.com/a/b?email=a%40b.com&x=1#top", "https://shop.example.com/a/b"),
    ("https://user:pw@shop.example.com:8443/p?q", "https://shop.example.com:8443/p"),
    ("https://example.com", "https://example.com"),
    ("https://example.com/#frag?x", "https://example.com/"),
    ("/crm/update?phone=%2B15551234567", "/crm/update"),
    ("s.example.com/abc?utm=1", "s.example.com/abc"),
    ("", ""),
])
def test_strip_query(url: str, stripped: str) -> None:
    assert strip_query(url) == stripped


PHONE = "+15551234567"


def test_url_encoded_numbers_are_found_at_any_depth() -> None:
    """Review of issue 12, item 2: the pre-check ran before decoding in nested values."""
    encoded = "%2B1%20555%20123%204567"
    hashing = Redactor("hash", HASH)
    assert hashing.text(encoded) == hashed(PHONE)
    assert hashing.value({"a": {"b": encoded}, "l": [encoded, f"x {encoded}"]}) == {
        "a": {"b": hashed(PHONE)}, "l": [hashed(PHONE), f"x {hashed(PHONE)}"]}
    assert Redactor("drop", None).value({"a": [encoded], "b": {"c": encoded}}) == {
        "a": [], "b": {}}


@pytest.mark.parametrize("text", [
    "tel=%2B1+555+123+4567", "tel=%2B1+%28555%29+123-4567", "tel=555+123+4567",
    "tel=%2B1%20555%20123%204567",
])
def test_form_encoded_numbers_are_found_whole(text: str) -> None:
    """Review of issue 12, item 3: "+" for a space, as urlencode writes it."""
    hashing = Redactor("hash", HASH)
    assert hashing.text(text) == f"tel={hashed(PHONE)}"
    assert hashing.value({"k": [{"q": text}]}) == {"k": [{"q": f"tel={hashed(PHONE)}"}]}
    assert Redactor("drop", None).text(text) == "tel="


def test_a_literal_number_and_an_encoded_one_in_one_text() -> None:
    hashing = Redactor("hash", HASH)
    assert hashing.text(f"{PHONE} or %2B44+7700+900123") == (
        f"{hashed(PHONE)} or {hashed('+447700900123')}")
    assert hashing.text("jane+tag@example.com") == hashed("jane+tag@example.com")


@pytest.mark.parametrize("group", [
    ["jane@example.com", "JANE@Example.COM", "jane%40example.com"],
    [PHONE, "+1 (555) 123-4567", "+1-555-123-4567", "(555) 123-4567", "555.123.4567",
     "1-555-123-4567", "%2B1%20555%20123%204567", "tel=%2B1+555+123+4567",
     "+\uff11\uff15\uff15\uff15\uff11\uff12\uff13\uff14\uff15\uff16\uff17"],
    ["+44 20 7946 0958", "+44 (0)20 7946 0958", "0044 20 7946 0958", "+442079460958"],
])
def test_one_address_or_number_has_one_pseudonym_however_written(group: list[str]) -> None:
    hashing = Redactor("hash", HASH)
    pseudonyms = {hashing.text(text).removeprefix("tel=") for text in group}
    assert len(pseudonyms) == 1, pseudonyms
    assert pseudonyms <= {hashed("jane@example.com"), hashed(PHONE), hashed("+442079460958")}


def test_the_redactor_takes_one_shot_iterables() -> None:
    """Review of issue 12, item 9: any() used to consume the hash keys."""
    redactor = Redactor("off", HASH, drop_keys=iter(["email"]),
                        hash_keys=(k for k in ["customer_id"]))
    assert redactor.value({"email": "x", "customer_id": "C-1"}) == {"customer_id": hashed("C-1")}
    with pytest.raises(ValueError, match="salt"):
        Redactor("off", None, hash_keys=iter(["customer_id"]))


# ---------------------------------------------------------------- policies in the mapper


def options(pii: dict[str, str], properties: dict[str, Any] | None = None) -> MappingOptions:
    table: dict[str, Any] = {"pii": pii}
    if properties is not None:
        table["properties"] = properties
    return mapping_options(table, environ=ENV)


def test_a_fields_own_key_wins_over_its_class() -> None:
    chosen = options({"free_text": "drop", "error": "keep", "urls": "strip_query",
                      "short_url": "hash", "user_agents": "drop", "device_tokens": "hash",
                      "push_token": "drop"})
    assert chosen.policy("message_body") == "drop"
    assert chosen.policy("input") == "drop"  # Braze marks it pii; its class applies
    assert chosen.policy("error") == "keep"
    assert chosen.policy("url") == "strip_query"
    assert chosen.policy("short_url") == "hash"
    assert chosen.policy("push_token") == "drop"
    assert chosen.policy("update_token") == "hash"
    assert chosen.policy("campaign_name") == "keep"
    assert MappingOptions().policy("message_body") == "keep"  # defaults stay keep


def test_field_policies_in_events_and_in_the_redacted_record() -> None:
    chosen = options({"urls": "strip_query", "user_agents": "hash", "free_text": "keep",
                      "external_user_id": "hash"}, {"scan": "drop"})
    mapper = mapper_for("users.messages.email.Click", chosen)
    record = {"id": "e-1", "external_user_id": "user-0001", "time": 1_700_000_000,
              "url": "https://x.com/p/a@b.com?email=a@b.com", "user_agent": "Mozilla/5.0",
              "link_alias": "hero"}
    result = mapper.map(record)
    assert isinstance(result, Mapped)
    props = result.event["event_properties"]
    assert props["url"] == "https://x.com/p/"
    assert props["user_agent"] == hashed("Mozilla/5.0")
    assert result.event["user_id"] == hashed("user-0001")
    assert mapper.destination("url") == (
        "event_properties.url (query and fragment removed) "
        "(e-mail addresses and phone numbers removed)")
    redacted = mapper.redact_record(record)
    assert redacted["url"] == "https://x.com/p/"
    assert redacted["external_user_id"] == hashed("user-0001")
    assert record["url"].endswith("?email=a@b.com")  # the record itself is untouched


def test_media_urls_are_stripped_and_hashed_item_by_item() -> None:
    record = {"id": "e-1", "external_user_id": "user-0001", "time": 1_700_000_000,
              "media_urls": ["https://m.example.com/1.jpg?sig=a@b.com", None]}
    stripped = mapper_for("users.messages.sms.InboundReceive", options({"urls": "strip_query"}))
    result = stripped.map(record)
    assert isinstance(result, Mapped)
    assert result.event["event_properties"]["media_urls"] == ["https://m.example.com/1.jpg",
                                                              None]
    hashing = mapper_for("users.messages.sms.InboundReceive", options({"media_urls": "hash"}))
    result = hashing.map(record)
    assert isinstance(result, Mapped)
    assert result.event["event_properties"]["media_urls"] == [
        hashed("https://m.example.com/1.jpg?sig=a@b.com"), None]


def test_custom_properties_and_attributes_follow_the_properties_policy() -> None:
    chosen = options({}, {"drop": ["email"], "hash": ["customer_id"], "scan": "hash"})
    custom = mapper_for("users.behaviors.CustomEvent", chosen)
    record = {"id": "e-1", "external_user_id": "user-0001", "time": 1_700_000_000,
              "name": "signup", "properties": orjson.dumps({
                  "Email": "a@b.com", "customer_id": "C-1",
                  "items": [{"note": "call 555-123-4567"}], "plan": "pro"}).decode()}
    result = custom.map(record)
    assert isinstance(result, Mapped)
    prefix = "[Custom event property] "
    assert result.event["event_properties"] == {
        prefix + "customer_id": hashed("C-1"),
        prefix + "items": [{"note": f"call {hashed('+15551234567')}"}],
        prefix + "plan": "pro",
    }
    kept = orjson.loads(custom.redact_record(record)["properties"])
    assert kept == {"customer_id": hashed("C-1"),
                    "items": [{"note": f"call {hashed('+15551234567')}"}], "plan": "pro"}
    not_json = custom.map({**record, "properties": "{broken a@b.com"})
    assert isinstance(not_json, Mapped)
    assert not_json.event["event_properties"]["properties"] == f"{{broken {hashed('a@b.com')}"

    update = {"id": "e-2", "external_user_id": "user-0001", "time": 1_700_000_000,
              "custom_attributes": '{"email": "a@b.com", "tier": "gold", "x": "+15551234567"}'}
    as_event = mapper_for("users.profile.Update", chosen).map(update)
    assert isinstance(as_event, Mapped)
    assert orjson.loads(as_event.event["event_properties"]["custom_attributes"]) == {
        "tier": "gold", "x": hashed("+15551234567")}
    identify_options = mapping_options(
        {"properties": {"drop": ["email"], "scan": "hash"},
         "user_properties": {"profile_updates": True}}, environ=ENV)
    identify = mapper_for("users.profile.Update", identify_options).map(update)
    assert isinstance(identify, Mapped)
    assert identify.event["user_properties"]["$set"] == {"tier": "gold",
                                                          "x": hashed("+15551234567")}


def test_defaults_change_nothing_and_copy_nothing() -> None:
    mapper = mapper_for("users.behaviors.CustomEvent", MappingOptions())
    record = {"id": "e-1", "external_user_id": "a@b.com", "time": 1, "name": "x",
              "properties": '{"email": "a@b.com"}'}
    assert mapper.redact_record(record) is record
    assert redacted_record("users.behaviors.CustomEvent", MappingOptions(), record) is record
    result = mapper.map(record)
    assert isinstance(result, Mapped)
    assert result.event["event_properties"] == {"[Custom event property] email": "a@b.com"}


def test_a_rejection_names_no_value_under_a_policy() -> None:
    record = {"id": "e-1", "external_user_id": ["a@b.com"], "time": 1}
    plain = mapper_for("users.behaviors.app.SessionStart", MappingOptions()).map(record)
    private = mapper_for("users.behaviors.app.SessionStart",
                         options({"external_user_id": "hash"})).map(record)
    assert isinstance(plain, Rejected) and "a@b.com" in plain.detail
    assert isinstance(private, Rejected) and "a@b.com" not in private.detail
    assert private.detail == "external_user_id is a list, not a string or an integer"


@pytest.mark.parametrize("record", [
    {"time": "jane@example.com +15551234567"},
    {"time": None, "time_ms": "call +15551234567"},
    {"time": {"at": "jane@example.com"}, "time_ms": ["+15551234567"]},
])
def test_no_time_detail_names_no_value_under_a_policy(record: dict[str, Any]) -> None:
    """Review of issue 12, item 5."""
    full = {"id": "e-1", "external_user_id": "u-1", **record}
    plain = mapper_for("users.behaviors.app.SessionStart", MappingOptions()).map(full)
    assert isinstance(plain, Rejected) and ("jane@" in plain.detail or "555" in plain.detail)
    for chosen in (options({"external_user_id": "hash"}), options({}, {"scan": "drop"}),
                   load_mapping_file(str(PRIVACY_FIRST), ENV)):
        private = mapper_for("users.behaviors.app.SessionStart", chosen).map(full)
        assert isinstance(private, Rejected) and private.reason == "no_time"
        assert "jane" not in private.detail and "555" not in private.detail
        assert private.detail.startswith("no usable timestamp: ")
        assert " is a " in private.detail and "(" not in private.detail


def test_properties_named_like_a_hashed_field_are_hashed_as_it_is() -> None:
    """Review of issue 12, item 1: only dropped fields' names used to apply to properties."""
    chosen = options({"external_user_id": "hash", "user_id": "hash", "ad_id": "hash"})
    mapper = mapper_for("users.behaviors.CustomEvent", chosen)
    record = {"id": "e-1", "external_user_id": "cust-0042", "user_id": "bz-1",
              "time": 1_700_000_000, "name": "signup", "properties": orjson.dumps({
                  "external_user_id": "cust-0042", "user_id": "bz-1", "ad_id": 42,
                  "ids": ["a", 1, None], "plan": "pro", "nested": {"user_id": "bz-1"}}).decode()}
    result = mapper.map(record)
    assert isinstance(result, Mapped)
    props = result.event["event_properties"]
    prefix = "[Custom event property] "
    assert result.event["user_id"] == hashed("cust-0042")
    assert props[prefix + "external_user_id"] == result.event["user_id"]  # one pseudonym
    assert props[prefix + "user_id"] == props["braze_id"] == hashed("bz-1")
    assert props[prefix + "ad_id"] == hashed("42")
    assert props[prefix + "plan"] == "pro"
    assert props[prefix + "ids"] == ["a", 1, None]
    listed = mapper.map({**record, "properties": '{"ad_id": ["a", 1, null]}'})
    assert isinstance(listed, Mapped)  # a list item by item, as media_urls
    assert listed.event["event_properties"][prefix + "ad_id"] == [hashed("a"), hashed("1"),
                                                                  None]
    assert props[prefix + "nested"] == {"user_id": "bz-1"}  # exact top-level keys, as drop
    kept = orjson.loads(mapper.redact_record(record)["properties"])
    assert kept["external_user_id"] == hashed("cust-0042")
    assert kept["user_id"] == hashed("bz-1") and kept["ad_id"] == hashed("42")
    # privacy-first also names them in [mapping.properties].hash: hashed once, at any depth
    first = mapper_for("users.behaviors.CustomEvent", load_mapping_file(str(PRIVACY_FIRST), ENV))
    record["properties"] = orjson.dumps({"external_user_id": "cust-0042", "bsuid": "b-9",
                                         "externalId": "cust-0042", "ad_id": "ad-7",
                                         "deep": [{"User_Id": "bz-1"}]}).decode()
    result = first.map(record)
    assert isinstance(result, Mapped)
    props = result.event["event_properties"]
    assert props[prefix + "external_user_id"] == result.event["user_id"] == hashed("cust-0042")
    assert props[prefix + "externalId"] == hashed("cust-0042")
    assert props[prefix + "bsuid"] == hashed("b-9") and props[prefix + "ad_id"] == hashed("ad-7")
    assert props[prefix + "deep"] == [{"User_Id": hashed("bz-1")}]
    assert "cust-0042" not in orjson.dumps(first.redact_record(record)).decode()


def test_the_scan_covers_every_other_kept_string() -> None:
    """Review of issue 12, item 6: unclassified fields, productId and the custom event's
    name; not the ids, insert_id nor time."""
    chosen = options({"external_user_id": "hash"}, {"scan": "hash"})
    purchase = {"id": "jane@example.com", "external_user_id": "jane@example.com",
                "device_id": "dev jane@example.com", "time": 1_700_000_000,
                "product_id": "sku for jane@example.com", "price": "call +1 555 123 4567",
                "currency": "usd", "app_id": "app-1", "platform": "+1 (555) 123-4567"}
    result = mapper_for("users.behaviors.Purchase", chosen).map(purchase)
    assert isinstance(result, Mapped)
    event = result.event
    assert event["insert_id"] == "jane@example.com"  # the event id is not free text
    assert event["device_id"] == "dev jane@example.com"  # an id, under its own policy
    assert event["productId"] == f"sku for {hashed('jane@example.com')}"
    assert event["event_properties"]["price"] == f"call {hashed(PHONE)}"
    assert event["event_properties"]["platform"] == hashed(PHONE)
    assert event["event_properties"]["app_id"] == "app-1"
    step = {"id": "e-2", "external_user_id": "u-1", "user_id": "bz-1", "time": 1_700_000_000,
            "exit_reason": "sent to jane@example.com", "canvas_name": "Win back +15551234567",
            "progression_type": "exit", "canvas_entry_id": b"ref jane@example.com",
            "next_step_id": b"\xff\xfe"}
    result = mapper_for("users.canvasstep.Progression", chosen).map(step)
    assert isinstance(result, Mapped)
    props = result.event["event_properties"]
    assert props["exit_reason"] == f"sent to {hashed('jane@example.com')}"
    assert props["canvas_name"] == f"Win back {hashed(PHONE)}"
    assert props["progression_type"] == "exit" and props["braze_id"] == "bz-1"
    assert props["canvas_entry_id"] == f"ref {hashed('jane@example.com')}"  # UTF-8 bytes
    assert props["next_step_id"] == "fffe"  # not UTF-8: hex as always
    redacted = mapper_for("users.canvasstep.Progression", chosen).redact_record(step)
    assert redacted["exit_reason"] == props["exit_reason"]
    assert redacted["canvas_entry_id"] == props["canvas_entry_id"]
    named = {"id": "e-3", "external_user_id": "u-1", "time": 1_700_000_000,
             "name": "Signup jane@example.com", "properties": "{}"}
    custom = mapper_for("users.behaviors.CustomEvent", chosen)
    result = custom.map(named)
    assert isinstance(result, Mapped)
    assert result.event["event_type"] == (
        f"[Appboy] [Custom Event] Signup {hashed('jane@example.com')}")
    assert custom.redact_record(named)["name"] == f"Signup {hashed('jane@example.com')}"
    dropping = mapper_for("users.behaviors.CustomEvent", options({}, {"scan": "drop"}))
    result = dropping.map({**named, "name": "jane@example.com"})
    assert isinstance(result, Mapped)
    assert result.event["event_type"] == "[Appboy] [Custom Event] "  # as a nameless one
    # without a scan nothing of it runs: the values stay as they are
    plain = mapper_for("users.canvasstep.Progression", options({"external_user_id": "hash"}))
    result = plain.map(step)
    assert isinstance(result, Mapped)
    assert result.event["event_properties"]["exit_reason"] == "sent to jane@example.com"


def test_bytes_are_scanned_as_text_when_they_are_utf8() -> None:
    """Review of issue 12, item 8: hex hid an address from the scan."""
    chosen = options({}, {"scan": "hash"})
    custom = mapper_for("users.behaviors.CustomEvent", chosen)
    record = {"id": "e-1", "external_user_id": "u-1", "time": 1_700_000_000, "name": "x",
              "properties": b"not json, jane@example.com"}
    result = custom.map(record)
    assert isinstance(result, Mapped)
    assert result.event["event_properties"]["properties"] == (
        f"not json, {hashed('jane@example.com')}")
    assert custom.redact_record(record)["properties"] == (
        f"not json, {hashed('jane@example.com')}")
    result = custom.map({**record, "properties": {"k": b"jane@example.com", "n": [b"\xff"]}})
    assert isinstance(result, Mapped)
    assert result.event["event_properties"] == {
        "[Custom event property] k": hashed("jane@example.com"),
        "[Custom event property] n": ["ff"]}
    plain = mapper_for("users.behaviors.CustomEvent", MappingOptions()).map(record)
    assert isinstance(plain, Mapped)  # without a scan: hex, as always
    assert plain.event["event_properties"]["properties"] == b"not json, jane@example.com".hex()


def test_one_check_says_whether_a_configuration_needs_the_salt() -> None:
    """Review of issue 12, item 10: MappingOptions and the file loader ask one function."""
    from currents_export.mapping.mapper import PropertiesPolicy, needs_salt

    assert not MappingOptions().needs_salt
    assert not needs_salt({"email_address": "drop"}, {"urls": "strip_query"},
                          PropertiesPolicy(scan="drop"))
    assert needs_salt({}, {"urls": "hash"}, PropertiesPolicy())
    assert needs_salt({}, {}, PropertiesPolicy(hash=frozenset({"x"})))
    assert needs_salt({}, {}, PropertiesPolicy(scan="hash"))
    assert load_mapping_file(str(PRIVACY_FIRST), ENV).needs_salt
    with pytest.raises(ValueError, match="salt"):
        MappingOptions(pii={"ad_id": "hash"})


def test_inspect_schema_outline_shows_no_defaults_nor_docs() -> None:
    schema = {"type": "record", "name": "Open", "doc": "e.g. a@b.com", "x-sample": "a@b.com",
              "fields": [{"name": "email_address", "type": ["string", "null"],
                          "default": "a@b.com", "doc": "+15551234567"},
                         {"name": "n", "type": ["null", "int"], "default": None}]}
    outline = schema_outline(schema)
    assert "a@b.com" not in orjson.dumps(outline).decode()
    assert "+15551234567" not in orjson.dumps(outline).decode()
    assert outline["fields"][0]["default"] == "(not shown)"
    assert outline["fields"][1]["default"] is None
    ours = writer_schema("users.messages.email.Click")
    assert schema_outline(ours) == ours


# ---------------------------------------------------------------- configuration


def test_privacy_first_turns_everything_on() -> None:
    loaded = load_mapping_file(str(PRIVACY_FIRST), ENV)
    assert set(loaded.pii_classes) == set(CLASS_KEYS.values())
    assert loaded.policy("message_body") == "drop"
    assert loaded.policy("url") == "strip_query"
    assert loaded.policy("push_token") == "drop"
    assert loaded.policy("user_agent") == "drop"
    assert loaded.policy("external_user_id") == "hash"
    assert loaded.properties.scan == "hash"
    assert {"email", "phone", "address", "birthday"} <= loaded.properties.drop
    assert loaded.dead_letter_raw_record is False
    assert mapping_options({"dead_letter_raw_record": True}).dead_letter_raw_record


@pytest.mark.parametrize(("text", "named"), [
    ('[mapping.pii]\nfree_txt = "drop"\n', "mapping.pii.free_txt: neither a class"),
    ('[mapping.pii]\nfree_text = "scan"\n', "mapping.pii.free_text: 'scan' is not one of"),
    ('[mapping.pii]\nmessage_body = "strip_query"\n', "mapping.pii.message_body: 'strip_qu"),
    ('[mapping.pii]\nuser_agents = "strip_query"\n', "mapping.pii.user_agents:"),
    ('[mapping.pii]\ncampaign_name = "drop"\n', "mapping.pii.campaign_name: neither"),
    ('[mapping.properties]\nscan = "yes"\n', "mapping.properties.scan: 'yes' is not one of"),
    ('[mapping.properties]\nscan = true\n', "mapping.properties.scan: True is not one of"),
    ('[mapping.properties]\nredact = ["email"]\n', "mapping.properties.redact: unknown key"),
    ('[mapping.properties]\ndrop = "email"\n', "mapping.properties.drop: must be a list"),
    ('[mapping.properties]\ndrop = [""]\n', "mapping.properties.drop: key names must not"),
    ('[mapping.properties]\ndrop = ["E-mail"]\nhash = ["email"]\n', "both dropped and hashed"),
    ('[mapping]\ndead_letter_raw_record = "yes"\n', "mapping.dead_letter_raw_record: must"),
    ('[mapping]\nproperties = "off"\n', "mapping.properties: must be a table"),
])
def test_bad_privacy_configuration_names_file_line_and_key(text: str, named: str) -> None:
    source = "privacy.toml"
    content = "# comment\n" + text
    with pytest.raises(MappingConfigError) as raised:
        mapping_options(tomllib.loads(content).get("mapping", {}), source=source,
                        text=content, environ=ENV)
    message = str(raised.value)
    assert message.startswith(f"{source}, line ")
    assert named in message
    assert re.search(r"line [234]\b", message), message


@pytest.mark.parametrize("text", [
    '[mapping.properties]\nscan = "hash"\n',
    '[mapping.properties]\nhash = ["customer_id"]\n',
    '[mapping.pii]\nurls = "hash"\n',
])
def test_hashing_anywhere_needs_the_salt(text: str) -> None:
    with pytest.raises(MappingConfigError, match="CURRENTS_EXPORT_PII_SALT"):
        mapping_options(tomllib.loads(text)["mapping"], environ={})
    mapping_options({"properties": {"scan": "drop"}}, environ={})  # dropping needs none


def test_the_cli_refuses_a_bad_privacy_key(tmp_path: Path) -> None:
    config = write(tmp_path, '# c\n[mapping.pii]\nurls = "strip"\n')
    result = run_cli("replay", str(tmp_path), "--dry-run", "--config", str(config),
                     "--state", str(tmp_path / "s.sqlite"), env=ENV)
    assert result.exit_code == 2
    assert "line 3" in result.output and "mapping.pii.urls" in result.output


# ---------------------------------------------------------------- the proof, end to end

EMAILS = ["zoe.unal+promo@planted.example.org", "J.Smith@planted-mail.example.co.uk",
          "first_last-99@sub.planted.example.com"]
PHONES = ["+15551234567", "+1 (555) 987-6543", "+44 7700 900123", "(555) 246-8100",
          "555.321.7788", "07700 900456", "06 12 34 56 78", "+33 6 98 76 54 32",
          "1-800-555-0199"]
SILENCED = "silenced-device-000001"
_IDS = frozenset({"id", "external_user_id", "user_id", "device_id"})
PLANTED_CLASSES = ("free_text", "url", "device_token", "user_agent")


def planted_pair(index: int) -> tuple[str, str]:
    email = EMAILS[index % len(EMAILS)].replace("@", f".r{index}@")
    return email, PHONES[index % len(PHONES)]


def plant_text(name: str, index: int) -> str:
    email, phone = planted_pair(index)
    kind = field_class(name)
    if kind == "url":
        if name == "url_path":
            return f"/crm/{email}/update?phone={quote(phone)}"
        return (f"https://shop.example.com/u/{quote(email)}/p?email={quote(email)}"
                f"&tel={quote(phone)}#{email}")
    if name in ("message_extras", "flow_response_json", "tool_arguments", "raw_response"):
        return json.dumps({"note": f"reach {email}", "phone": phone,
                           "nested": [{"contact": f"{phone} / {email}"}]})
    return f"Hi, it's me: {email}, or call {phone} (after 6pm). Order ORD-{index:08d}."


def plant_properties(index: int) -> str:
    email, phone = planted_pair(index)
    other_email, other_phone = planted_pair(index + 1)
    if index % 11 == 0:  # not JSON: kept as text, scanned
        return f"{{not json {email} {phone}"
    return json.dumps({
        "plan": "pro", "price": 12.99, "quantity": 3, "order_id": f"ORD-{index:08d}",
        # the review's plants: glued addresses, form-encoded and nested encoded numbers,
        # an id copied under a hashed field's name
        "dedupe_key": f"{email}_20240115", "ref": f"{other_email}-1699999999",
        "form": "tel=" + quote_plus(phone), "deeper": {"x": [quote(other_phone)]},
        "external_user_id": email, "lat": "+48.8584123", "icon": "logo@2x.png",
        "comment": f"call me on {phone} or write to {email}",
        "Email": email, "PHONE_NUMBER": phone, "shippingAddress": "1 Rue de Rivoli",
        "contacts": [{"note": f"mail {other_email}"},
                     {"deep": {"list": [other_phone, {"again": email}], "n": 7}}],
        "url": f"https://x.example.com/?email={quote(email)}",
    })


def planted_record(event_type: str, record: dict[str, Any], index: int) -> dict[str, Any]:
    fields = {spec.name: spec for spec in event_type_fields(event_type)}
    out = dict(record)
    for name, spec in fields.items():
        kind = field_class(name)
        if kind in PLANTED_CLASSES:
            text = plant_text(name, index)
            out[name] = [text, None] if spec.item_type else text
        elif kind == PROPERTIES:
            out[name] = plant_properties(index)
        elif (kind is None and spec.avro_type == "string" and name not in _IDS
              and index % 3 == 1):  # unclassified text: the scan covers it too
            email, phone = planted_pair(index)
            out[name] = f"{name} {email} {phone}"
    # some records must reach the dead letter: no id, too short an id, a silenced device
    if index % 10 == 3:
        out["id"] = ""
    elif index % 10 == 5 and "device_id" in fields:
        out["device_id"], out["external_user_id"] = "d1", None
    elif index % 10 == 7 and "device_id" in fields:
        out["device_id"] = SILENCED
    return out


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, dict[str, Any]]]:
    """Fixtures of all 94 types with planted addresses and numbers; records by id."""
    root = tmp_path_factory.mktemp("planted")
    files = generate_fixtures(root, events_per_type=40, seed=12, files_per_type=1)
    records: dict[str, dict[str, Any]] = {}
    for number, fixture in enumerate(files):
        with fixture.path.open("rb") as fo:
            reader = fastavro.reader(fo)
            schema = reader.writer_schema
            rows = [planted_record(fixture.event_type, r, number * 1000 + i)
                    for i, r in enumerate(reader)]
        with fixture.path.open("wb") as fo:
            fastavro.writer(fo, fastavro.parse_schema(schema), rows)
        records.update({r["id"]: {**r, "_type": fixture.event_type} for r in rows if r["id"]})
    return root, records


def planted_strings() -> list[str]:
    found = set(PHONES)
    for email in EMAILS:
        local, domain = email.split("@")
        found |= {domain, local}  # every planted address shares one of these
    return sorted(found | {quote(p) for p in PHONES})


# (an image name such as logo@2x.png is no address: the plant has one, it must stay)
EMAIL = re.compile(r"[\w.%+-]+(@|%40)(?!2x\.png)[\w-]+(\.[\w-]+)*\.[A-Za-z]{2,}")


def assert_clean(text: str, where: str) -> None:
    for planted_text in planted_strings():
        assert planted_text not in text, f"{planted_text!r} in {where}"
    found = EMAIL.search(text)
    assert found is None, f"{found.group()!r} in {where}" if found else ""
    assert not find_personal(text), f"{find_personal(text)[:3]} in {where}"


def test_planted_personal_data_reaches_nothing_under_privacy_first(
    emulator: Emulator, planted: tuple[Path, dict[str, dict[str, Any]]], tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    root, records = planted
    source = orjson.dumps(list(records.values())).decode()
    assert all(s in source for s in PHONES) and EMAIL.search(source)  # something to hide
    httpx.patch(f"{emulator.url}/_emulator/config",
                json={"silenced_device_ids": [SILENCED]}).raise_for_status()
    caplog.set_level(logging.DEBUG)
    output = tmp_path / "events.jsonl"
    result, summary = replay_config(emulator, tmp_path / "work", [root], PRIVACY_FIRST,
                                    "-vv", "--output", str(output))
    assert result.exit_code in (0, 1), result.output  # 1: some events dead-lettered
    assert summary["delivered"] > 1000
    dead = summary["dead_lettered"]
    assert dead.get("no_event_id") and dead.get("invalid_id"), dead
    assert dead.get("amplitude_silenced_device"), dead  # refused by Amplitude: _rejected
    assert sum(dead.values()) > len(dead)

    # nothing in Amplitude, the output, the logs, --output, the dead letter
    stored = raw_events(emulator).decode()
    assert_clean(stored, "the emulator's store")
    assert '"+48.8584123"' in stored and '"logo@2x.png"' in stored  # ordinary values intact
    assert_clean(result.output, "the CLI output at -vv")
    assert_clean(caplog.text, "the logs at -vv")
    assert_clean(output.read_text(), "--output")
    lines = [orjson.loads(line) for part in (tmp_path / "work" / "dead-letter").rglob("*")
             if part.is_file() for line in part.read_bytes().splitlines()]
    assert len(lines) == sum(dead.values())
    assert {line["reason"] for line in lines} >= {"no_event_id", "invalid_id"}
    # Records refused before sending are kept, redacted; events Amplitude refused are kept
    # as sent (after the policy), with their record's place.
    assert all(line["record"] for line in lines if not line["reason"].startswith("amplitude_"))
    assert all(line["event"] and line["record"] is None for line in lines
               if line["reason"].startswith("amplitude_"))
    assert_clean(orjson.dumps(lines).decode(), "the dead letter")

    # inspect, every file: samples shown, after the policy
    with_identity = {r["_type"] for r in records.values()
                     if r.get("external_user_id") or r.get("device_id")}
    for path in sorted(root.rglob("*.avro")):
        shown = run_cli("inspect", str(path), "--samples", "5", "--config",
                        str(PRIVACY_FIRST), env=ENV)
        assert shown.exit_code == 0, shown.output
        assert_clean(shown.output, f"inspect {path.name}")
        report = orjson.loads(shown.output)
        assert report["sample_events"] or report["event_type"] not in with_identity
        classes = {f["field"]: f["class"] for f in report["mapping"]["fields"]}
        assert all(classes[name] == field_class(name) for name in classes)

    # events still delivered for every type that has identity, users still distinct
    events = stored_events(emulator)
    delivered_types = {records[e["insert_id"]]["_type"] for e in events}
    assert with_identity - delivered_types == set()
    assert len(with_identity) >= 90
    pseudonyms: dict[str, str] = {}
    for event in events:
        original = records[event["insert_id"]].get("external_user_id")
        if original:
            assert event["user_id"] == hashed(original)
            pseudonyms[original] = event["user_id"]
    assert len(pseudonyms) > 100
    assert len(set(pseudonyms.values())) == len(pseudonyms)  # distinct users stay distinct
    # the kept free text and URLs still say something
    texts = [e["event_properties"] for e in events if "url" in e.get("event_properties", {})]
    assert texts and all(p["url"].startswith("https://shop.example.com/u/") for p in texts)
    errors = [e["event_properties"]["error"] for e in events
              if "error" in e.get("event_properties", {})]
    assert errors and all("Order ORD-" in text for text in errors)


def test_dead_letter_keeps_the_raw_record_only_when_configured(
    emulator: Emulator, planted: tuple[Path, dict[str, dict[str, Any]]], tmp_path: Path,
) -> None:
    root, _ = planted
    [path] = [p for p in root.rglob("*.avro") if "sms.InboundReceive" in str(p)]
    text = PRIVACY_FIRST.read_text().replace("dead_letter_raw_record = false",
                                             "dead_letter_raw_record = true")
    config = write(tmp_path, text)
    result, summary = replay_config(emulator, tmp_path / "work", [path], config)
    assert sum(summary["dead_lettered"].values()) > 0, result.output
    dead = b"".join(p.read_bytes() for p in (tmp_path / "work" / "dead-letter").rglob("*")
                    if p.is_file()).decode()
    assert any(email.split("@")[1] in dead for email in EMAILS)  # the raw record, as asked


def test_without_the_policy_the_planted_data_would_leak(
    emulator: Emulator, planted: tuple[Path, dict[str, dict[str, Any]]], tmp_path: Path,
) -> None:
    """The control: the plant reaches every channel the proof checks when nothing stops it
    (so the proof's silence means the policy worked, not that nothing was planted)."""
    root, _ = planted
    httpx.patch(f"{emulator.url}/_emulator/config",
                json={"silenced_device_ids": [SILENCED]}).raise_for_status()
    _, summary = replay_config(emulator, tmp_path / "work", [root], None)
    stored = raw_events(emulator).decode()
    dead = b"".join(p.read_bytes() for p in (tmp_path / "work" / "dead-letter").rglob("*")
                    if p.is_file()).decode()
    for text in (stored, dead):
        assert EMAIL.search(text) and any(phone in text for phone in PHONES)
    assert summary["dead_lettered"].get("amplitude_silenced_device"), summary["dead_lettered"]
