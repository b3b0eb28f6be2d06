"""The default mapping, family by family, for both profiles."""

from __future__ import annotations

import orjson
import pytest
from records import minimal_record

from currents_export.currents.schemas import known_event_types
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
from currents_export.mapping.names import BRAZE_DISPLAY_NAMES

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
