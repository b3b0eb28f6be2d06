"""The default mapping, family by family, for both profiles."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from currents_export.currents.schemas import event_type_fields, known_event_types
from currents_export.mapping import (
    NO_IDENTITY,
    PROPERTIES_NOT_JSON,
    Mapped,
    MappingOptions,
    Rejected,
    Skipped,
    float32,
    mapper_for,
)
from currents_export.mapping.mapper import TypeRule, UserProperties
from currents_export.mapping.names import BRAZE_DISPLAY_NAMES
from tests.support.records import minimal_record

BRAZE = MappingOptions()
PLAIN = MappingOptions(profile="plain")


def mapped(event_type: str, options: MappingOptions = BRAZE, floats: tuple[str, ...] = (),
           **values: object) -> dict:
    result = mapper_for(event_type, options, floats).map(minimal_record(event_type, **values))
    assert isinstance(result, Mapped), result
    return result.event


# ---- every type ---------------------------------------------------------------------------

@pytest.mark.parametrize("event_type", known_event_types())
@pytest.mark.parametrize("options", [BRAZE, PLAIN], ids=["braze", "plain"])
def test_every_type_maps_with_identity_time_and_a_name(
    event_type: str, options: MappingOptions
) -> None:
    record = minimal_record(event_type)
    result = mapper_for(event_type, options).map(record)
    if "external_user_id" not in record:  # UserDeleteRequest, agentconsole.ToolInvocation
        assert result == Skipped(NO_IDENTITY)
        return
    assert isinstance(result, Mapped)
    event = result.event
    assert event["insert_id"] == record["id"]
    assert event["user_id"] == "cust_00042"
    expected_ms = record.get("time_ms") or record["time"] * 1000
    assert event["time"] == expected_ms and isinstance(event["time"], int)
    if options.profile == "braze":
        assert event["event_type"].startswith("[Appboy] ")
    else:
        assert event["event_type"] in (event_type, record.get("name"))
    properties = event["event_properties"]
    assert not {"id", "external_user_id", "device_id", "time", "time_ms", "user_id"} & set(
        properties
    )
    if record.get("user_id"):
        assert properties["braze_id"] == record["user_id"]
    assert None not in properties.values()
    # Nothing sets top-level user or device properties by default.
    assert not {"user_properties", "platform", "os_version", "device_model", "country"} & set(
        event
    )
    orjson.dumps(event)  # JSON-safe


def test_the_name_table_covers_exactly_the_known_types() -> None:
    assert set(BRAZE_DISPLAY_NAMES) == set(known_event_types())
    assert len(set(BRAZE_DISPLAY_NAMES.values())) == len(BRAZE_DISPLAY_NAMES)


# ---- identity and time --------------------------------------------------------------------

def test_device_only_record_is_sent_with_device_id() -> None:
    event = mapped("users.behaviors.app.SessionStart", external_user_id=None,
                   device_id="8A1F8C5E-0D7B-4F00-9E51-2C4C0B1B7F10")
    assert "user_id" not in event
    assert event["device_id"] == "8A1F8C5E-0D7B-4F00-9E51-2C4C0B1B7F10"


def test_record_without_identity_is_skipped_or_uses_braze_id_when_configured() -> None:
    record = minimal_record("users.messages.email.Send", external_user_id=None)
    assert mapper_for("users.messages.email.Send", BRAZE).map(record) == Skipped(NO_IDENTITY)
    fallback = MappingOptions(identity_fallback="braze_id")
    result = mapper_for("users.messages.email.Send", fallback).map(record)
    assert isinstance(result, Mapped)
    assert result.event["user_id"] == record["user_id"]


def test_time_ms_wins_over_time() -> None:
    event = mapped("users.profile.Update", time=1_768_471_200, time_ms=1_768_471_200_987)
    assert event["time"] == 1_768_471_200_987
    assert event["event_type"] == "[Appboy] Profile Update"


def test_records_without_id_or_time_are_rejected_for_the_dead_letter() -> None:
    mapper = mapper_for("users.messages.email.Open", BRAZE)
    no_id = mapper.map(minimal_record("users.messages.email.Open", id=None))
    no_time = mapper.map(minimal_record("users.messages.email.Open", time=None))
    assert isinstance(no_id, Rejected) and no_id.reason == "no_event_id"
    assert isinstance(no_time, Rejected) and no_time.reason == "no_time"


# ---- behaviours: custom events and purchases ----------------------------------------------

def test_custom_event_name_and_prefixed_properties() -> None:
    properties = '{"plan": {"tier": "gold", "seats": [1, 2]}, "ville": "Zürich", "emoji": "🎉"}'
    event = mapped("users.behaviors.CustomEvent", name="Ajouté au panier",
                   properties=properties, platform="ios")
    assert event["event_type"] == "[Appboy] [Custom Event] Ajouté au panier"
    props = event["event_properties"]
    assert props["[Custom event property] plan"] == {"tier": "gold", "seats": [1, 2]}
    assert props["[Custom event property] ville"] == "Zürich"
    assert props["platform"] == "ios"
    assert "name" not in props and "properties" not in props


def test_custom_event_in_plain_profile_uses_raw_names() -> None:
    event = mapped("users.behaviors.CustomEvent", PLAIN, name="level_up",
                   properties='{"level": 3}')
    assert event["event_type"] == "level_up"
    assert event["event_properties"]["level"] == 3
    assert event["library"] == "currents-export"


def test_properties_that_are_not_json_keep_the_raw_string_and_are_counted() -> None:
    record = minimal_record("users.behaviors.CustomEvent", properties='{"broken": ')
    result = mapper_for("users.behaviors.CustomEvent", BRAZE).map(record)
    assert isinstance(result, Mapped)
    assert result.warnings == (PROPERTIES_NOT_JSON,)
    assert result.event["event_properties"]["properties"] == '{"broken": '


def test_purchase_sets_revenue_fields_and_keeps_currency_in_properties() -> None:
    event = mapped("users.behaviors.Purchase", floats=("price",), product_id="sku-42",
                   price=9.989999771118164, currency="eur",
                   properties='{"size": "M", "gift": true}')
    assert event["event_type"] == "[Appboy] Purchase"
    assert event["price"] == 9.99 and event["revenue"] == 9.99 and event["quantity"] == 1
    assert event["productId"] == "sku-42"
    assert event["currency"] == "EUR"
    props = event["event_properties"]
    assert props["currency"] == "eur"
    assert props["[Purchase property] size"] == "M"
    assert "price" not in props and "product_id" not in props


@pytest.mark.parametrize(
    ("raw", "expected"),
    [(9.989999771118164, 9.99), (3.140000104904175, 3.14), (0.0, 0.0), (1e-45, 1e-45),
     (123456.796875, 123456.8)],
)
def test_float32_values_get_their_shortest_decimal(raw: float, expected: float) -> None:
    assert float32(raw) == expected


def test_location_floats_are_rounded_only_for_float_fields() -> None:
    event = mapped("users.behaviors.Location", floats=("latitude", "longitude"),
                   latitude=48.856201171875, longitude=2.3522000312805176)
    assert event["event_type"] == "[Appboy] Location"
    assert event["event_properties"]["latitude"] == 48.8562
    assert event["event_properties"]["longitude"] == 2.3522


# ---- sessions, campaigns, Canvas ----------------------------------------------------------

def test_session_events_keep_the_braze_session_id_as_a_property() -> None:
    start = mapped("users.behaviors.app.SessionStart", session_id="b1c2-session")
    end = mapped("users.behaviors.app.SessionEnd", floats=("duration",),
                 duration=12.300000190734863)
    assert start["event_type"] == "[Appboy] Session Start"
    assert start["event_properties"]["session_id"] == "b1c2-session"
    assert "session_id" not in start  # Amplitude's numeric session id is not Braze's
    assert end["event_type"] == "[Appboy] Session End"
    assert end["event_properties"]["duration"] == 12.3


@pytest.mark.parametrize(
    ("event_type", "name"),
    [
        ("users.campaigns.Conversion", "[Appboy] Campaign Conversion"),
        ("users.campaigns.EnrollInControl", "[Appboy] Campaign Control Group Enrollment"),
        ("users.canvas.Entry", "[Appboy] Canvas Entry"),
        ("users.canvas.exit.MatchedAudience", "[Appboy] Exit Match Audience"),
        ("users.canvas.experimentstep.SplitEntry", "[Appboy] Experiment Step Split Entry"),
        ("users.canvasstep.Progression", "[Appboy] Canvas Step Progression"),
    ],
)
def test_campaign_and_canvas_events(event_type: str, name: str) -> None:
    event = mapped(event_type, campaign_id="cmp-1") if "campaign" in event_type else mapped(
        event_type
    )
    assert event["event_type"] == name
    if "campaign" in event_type:
        assert event["event_properties"]["campaign_id"] == "cmp-1"


# ---- messaging channels -------------------------------------------------------------------

@pytest.mark.parametrize(
    ("event_type", "name"),
    [
        ("users.messages.email.Send", "[Appboy] Email Send"),
        ("users.messages.email.MarkAsSpam", "[Appboy] Email Mark As Spam"),
        ("users.messages.pushnotification.IosForeground",
         "[Appboy] Push Notification iOS Foreground Open"),
        ("users.messages.inappmessage.Click", "[Appboy] In-App Message Click"),
        ("users.messages.contentcard.Dismiss", "[Appboy] Content Card Dismiss"),
        ("users.messages.banner.Impression", "[Appboy] Banner Impression"),
        ("users.messages.featureflag.Impression", "[Appboy] Feature Flag Impression"),
        ("users.messages.sms.CarrierSend", "[Appboy] SMS Send To Carrier"),
        ("users.messages.whatsapp.InboundReceive", "[Appboy] WhatsApp Inbound Receive"),
        ("users.messages.rcs.Click", "[Appboy] RCS Click"),
        ("users.messages.line.Send", "[Appboy] LINE Send"),
        ("users.messages.webhook.Failure", "[Appboy] Webhook Failure"),
        ("users.messages.liveactivity.Outcome", "[Appboy] Live Activity Outcome"),
    ],
)
def test_messaging_channel_names(event_type: str, name: str) -> None:
    assert mapped(event_type)["event_type"] == name
    assert mapped(event_type, PLAIN)["event_type"] == event_type


def test_email_fields_stay_in_event_properties() -> None:
    event = mapped("users.messages.email.Click", email_address="ana@example.com",
                   url="https://example.com/x", suspected_bot_click_reason=["ip"])
    props = event["event_properties"]
    assert props["email_address"] == "ana@example.com"
    assert props["suspected_bot_click_reason"] == ["ip"]


def test_ad_ids_stay_in_properties_not_top_level() -> None:
    event = mapped("users.behaviors.CustomEvent", ad_id="AD-1", ad_id_type="ios_idfa")
    assert "idfa" not in event and "adid" not in event
    assert event["event_properties"]["ad_id"] == "AD-1"


# ---- profile, lifecycle, agent console, future types --------------------------------------

def test_lifecycle_types() -> None:
    orphan = mapped("users.UserOrphan", orphaned_by_id="other")
    assert orphan["event_type"] == "[Appboy] User Orphan"
    assert orphan["event_properties"]["orphaned_by_id"] == "other"
    delete = minimal_record("users.UserDeleteRequest")
    assert mapper_for("users.UserDeleteRequest", BRAZE).map(delete) == Skipped(NO_IDENTITY)


def test_agent_console_types() -> None:
    executed = mapped("agentconsole.AgentExecuted", model_name="m-1", cache_hit=False)
    assert executed["event_type"] == "[Appboy] Agent Console Agent Executed"
    assert executed["event_properties"]["cache_hit"] is False
    tool = minimal_record("agentconsole.ToolInvocation")
    assert mapper_for("agentconsole.ToolInvocation", BRAZE).map(tool) == Skipped(NO_IDENTITY)


def test_unknown_future_type_gets_a_generic_mapping() -> None:
    record = {"id": "e-1", "time": 1_700_000_000, "external_user_id": "cust_1",
              "user_id": "b-1", "brand_new_field": {"nested": True}}
    for options, name in [(BRAZE, "[Appboy] Hologram Beam Sent"),
                          (PLAIN, "users.messages.hologram.BeamSent")]:
        result = mapper_for("users.messages.hologram.BeamSent", options).map(record)
        assert isinstance(result, Mapped)
        assert result.event["event_type"] == name
        assert result.event["event_properties"]["brand_new_field"] == {"nested": True}


def test_unknown_profile_is_refused_with_the_choices() -> None:
    with pytest.raises(ValueError, match="braze or plain"):
        MappingOptions(profile="fancy")  # type: ignore[arg-type]


# ---- schema drift: a field's type changed ---------------------------------------------------

MAPPING_ERROR = "mapping_error"  # currents_export.errors.MAPPING_ERROR
SALTED = MappingOptions(pii={"external_user_id": "hash", "email_address": "hash"},
                        pii_salt=b"pepper")


def test_ids_given_as_integers_become_strings() -> None:
    event = mapped("users.messages.email.Open", id=1234567, external_user_id=42_000_017,
                   device_id=991_002, user_id=77)
    assert event["insert_id"] == "1234567"
    assert event["user_id"] == "42000017"
    assert event["device_id"] == "991002"
    assert event["event_properties"]["braze_id"] == "77"
    orjson.dumps(event)


@pytest.mark.parametrize("field", ["id", "external_user_id", "device_id", "user_id"])
@pytest.mark.parametrize("value", [True, 1.5, ["cust_1"], {"id": "x"}, b"\x01\x02"],
                         ids=["bool", "float", "list", "dict", "bytes"])
def test_ids_that_are_not_strings_or_integers_are_refused_naming_the_field(
    field: str, value: object
) -> None:
    record = minimal_record("users.messages.email.Open", **{field: value})
    result = mapper_for("users.messages.email.Open", BRAZE).map(record)
    assert isinstance(result, Rejected)
    assert result.reason == MAPPING_ERROR
    assert result.detail.startswith(f"{field} is a {type(value).__name__} (")


def test_hashing_accepts_ids_and_personal_fields_that_are_numbers() -> None:
    event = mapped("users.messages.email.Open", SALTED, external_user_id=42,
                   email_address=1234)
    assert event["user_id"] == SALTED.hash_value("42") == SALTED.hash_value(42)
    assert event["event_properties"]["email_address"] == SALTED.hash_value("1234")


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"time": "1768471200"}, 1_768_471_200_000),
        ({"time": " 1768471200.5 "}, 1_768_471_200_500),
        ({"time": 1_768_471_200.25}, 1_768_471_200_250),
        ({"time": Decimal("1768471200.125")}, 1_768_471_200_125),
        ({"time": datetime(2026, 1, 15, 10, tzinfo=UTC)}, 1_768_471_200_000),
        ({"time": datetime(2026, 1, 15, 10)}, 1_768_471_200_000),  # naive means UTC
        ({"time_ms": "1768471200123"}, 1_768_471_200_123),
        ({"time_ms": 1_768_471_200_123.4}, 1_768_471_200_123),
        ({"time_ms": "soon", "time": 1_768_471_200}, 1_768_471_200_000),  # falls back
    ],
)
def test_times_given_as_numeric_strings_floats_or_datetimes_become_integer_ms(
    values: dict[str, Any], expected: int
) -> None:
    event = mapped("users.behaviors.app.SessionStart", **values)
    assert event["time"] == expected and type(event["time"]) is int


@pytest.mark.parametrize(
    ("value", "shown"),
    [("yesterday", "str ('yesterday')"), (True, "bool (True)"), (float("nan"), "float (nan)"),
     ([1_768_471_200], "list ([1768471200])"), (10**30, "int (" + "1" + "0" * 30 + ")")],
)
def test_times_that_are_not_numbers_are_rejected_saying_what_they_were(
    value: object, shown: str
) -> None:
    record = minimal_record("users.behaviors.app.SessionStart", time=value)
    result = mapper_for("users.behaviors.app.SessionStart", BRAZE).map(record)
    assert result == Rejected("no_time", f"no usable timestamp: time is a {shown}")


def test_properties_given_as_a_map_are_merged_like_parsed_json() -> None:
    result = mapper_for("users.behaviors.CustomEvent", BRAZE).map(minimal_record(
        "users.behaviors.CustomEvent", properties={"plan": "gold", "seats": 3,
                                                   "blob": b"\xca\xfe"}))
    assert isinstance(result, Mapped) and result.warnings == ()
    props = result.event["event_properties"]
    assert props["[Custom event property] plan"] == "gold"
    assert props["[Custom event property] seats"] == 3
    assert props["[Custom event property] blob"] == "cafe"  # bytes as hex
    assert "properties" not in props


@pytest.mark.parametrize("raw", [["a", "b"], 42, 1.5, True, b"\xff\x00"],
                         ids=["list", "int", "float", "bool", "bytes-not-json"])
def test_properties_that_are_not_a_map_or_json_text_are_kept_and_counted(raw: object) -> None:
    record = minimal_record("users.behaviors.CustomEvent", properties=raw)
    result = mapper_for("users.behaviors.CustomEvent", BRAZE).map(record)
    assert isinstance(result, Mapped)
    assert result.warnings == (PROPERTIES_NOT_JSON,)
    expected = raw.hex() if isinstance(raw, bytes) else raw
    assert result.event["event_properties"]["properties"] == expected
    orjson.dumps(result.event)


def test_properties_given_as_utf8_json_bytes_are_parsed() -> None:
    event = mapped("users.behaviors.CustomEvent", properties='{"ville": "Zürich"}'.encode())
    assert event["event_properties"]["[Custom event property] ville"] == "Zürich"


def test_bytes_lists_maps_and_decimals_elsewhere_go_to_event_properties_json_safe() -> None:
    event = mapped("users.messages.email.Click", url=b"\x00\xff",
                   suspected_bot_click_reason=["ip", b"\x01"],
                   user_agent={"raw": "Mozilla", "parts": [b"\x02", {"k": b"\x03"}]},
                   link_id=Decimal("12.50"), is_amp=UUID(int=1))
    props = event["event_properties"]
    assert props["url"] == "00ff"
    assert props["suspected_bot_click_reason"] == ["ip", "01"]
    assert props["user_agent"] == {"raw": "Mozilla", "parts": ["02", {"k": "03"}]}
    assert props["link_id"] == 12.5
    orjson.dumps(event)


def test_purchase_price_currency_and_product_given_with_other_types() -> None:
    event = mapped("users.behaviors.Purchase", floats=("price",), price="9.99",
                   currency=978, product_id=42)
    assert event["price"] == event["revenue"] == 9.99 and event["quantity"] == 1
    assert event["currency"] == "978" and event["productId"] == "42"
    assert event["event_properties"]["currency"] == 978
    unusable = mapped("users.behaviors.Purchase", price="free", currency=b"eur")
    assert "revenue" not in unusable and "price" not in unusable
    assert unusable["event_properties"]["price"] == "free"  # kept, not lost
    assert unusable["currency"] == b"eur".hex().upper()


def test_a_double_where_a_float_was_is_not_rounded_to_single_precision() -> None:
    event = mapped("users.behaviors.Location", floats=("latitude",), latitude=1e300)
    assert event["event_properties"]["latitude"] == 1e300


def test_custom_event_names_that_are_not_strings_become_text() -> None:
    assert mapped("users.behaviors.CustomEvent", name=42)["event_type"] == (
        "[Appboy] [Custom Event] 42")
    assert mapped("users.behaviors.CustomEvent", PLAIN, name=True)["event_type"] == "true"
    assert mapped("users.behaviors.CustomEvent", PLAIN, name=0)["event_type"] == "0"


def test_top_level_device_fields_are_sent_as_strings() -> None:
    options = MappingOptions(device_fields="top_level")
    event = mapped("users.behaviors.CustomEvent", options, platform=["ios"], os_version=17)
    assert event["platform"] == '["ios"]' and event["os_version"] == "17"


def test_profile_update_custom_attributes_as_a_map_or_something_else() -> None:
    options = MappingOptions(user_properties=UserProperties(profile_updates=True,
                                                            subscription_changes=True))
    merged = mapped("users.profile.Update", options, custom_attributes={"tier": b"\x07"})
    assert merged["user_properties"]["$set"]["tier"] == "07"
    record = minimal_record("users.profile.Update", custom_attributes=[1, 2])
    kept = mapper_for("users.profile.Update", options).map(record)
    assert isinstance(kept, Mapped) and kept.warnings == (PROPERTIES_NOT_JSON,)
    assert kept.event["user_properties"]["$set"]["custom_attributes"] == [1, 2]
    change = mapped("users.behaviors.subscriptiongroup.StateChange", options,
                    subscription_group_id=12, subscription_status=b"\x01")
    assert change["user_properties"]["$set"] == {"subscription_group_12": "01"}


# Values a drifted Avro schema can decode to: every Avro type, logical types included.
# Integers stay within Avro's long; map keys are strings (Avro maps and records).
_AVRO_SCALARS = (
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats()
    | st.text(max_size=12) | st.binary(max_size=12)
    | st.integers(0, 2_000_000_000_000).map(str) | st.floats().map(str)
    | st.decimals(places=3) | st.datetimes(timezones=st.none() | st.just(UTC)) | st.uuids()
    | st.sampled_from(['{"a": 1}', "[1, 2]", "{not json", "null", '"x"'])
)
_AVRO_VALUES = st.recursive(
    _AVRO_SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                  max_size=3),
    max_leaves=8,
)
_DRIFT_OPTIONS = [
    BRAZE,
    PLAIN,
    MappingOptions(identity_fallback="braze_id", device_fields="top_level", backfill=True,
                   pii={"external_user_id": "hash", "user_id": "hash", "email_address": "hash",
                        "phone_number": "drop", "ad_id": "hash"}, pii_salt=b"pepper",
                   user_properties=UserProperties(profile_updates=True,
                                                  subscription_changes=True),
                   types={"users.behaviors.CustomEvent": TypeRule(rename={"plan": "tier"})}),
]


@pytest.mark.parametrize("event_type", known_event_types())
@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_drifted_records_never_raise_and_mapped_events_serialise(
    event_type: str, data: st.DataObject
) -> None:
    fields = [f.name for f in event_type_fields(event_type)]
    floats = tuple(f.name for f in event_type_fields(event_type) if f.avro_type == "float")
    record = minimal_record(event_type, device_id="dev-0001")
    record.update(data.draw(st.dictionaries(st.sampled_from(fields), _AVRO_VALUES, max_size=6),
                            label="drifted fields"))
    options = data.draw(st.sampled_from(_DRIFT_OPTIONS), label="options")

    result = mapper_for(event_type, options, floats).map(record)

    assert isinstance(result, Mapped | Skipped | Rejected)
    if isinstance(result, Mapped):
        event = result.event
        orjson.dumps(event)
        assert type(event["time"]) is int and isinstance(event["insert_id"], str)
        assert isinstance(event["event_type"], str)
        assert all(isinstance(event[k], str) for k in ("user_id", "device_id") if k in event)
    elif isinstance(result, Rejected):
        assert result.detail
