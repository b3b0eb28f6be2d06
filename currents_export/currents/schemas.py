"""Typed view of the Currents catalogue and the Avro writer schemas built from it."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

from currents_export.currents.catalogue import EVENT_TYPE_FIELDS

SCHEMA_NAMESPACE_ROOT = "dataexport.S3.inner"


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One field of a Currents event type."""

    name: str
    avro_type: str  # "string", "int", …, or "array<string>" / "array<string?>"
    nullable: bool
    pii: bool

    @property
    def item_type(self) -> str | None:
        """The item type of an array field (without ``?``), else None."""
        if not self.avro_type.startswith("array<"):
            return None
        return self.avro_type[len("array<") : -1].rstrip("?")

    @property
    def items_nullable(self) -> bool:
        return self.avro_type.endswith("?>")

    def to_avro(self) -> dict[str, Any]:
        base: Any = self.avro_type
        if self.item_type is not None:
            items: Any = ["null", self.item_type] if self.items_nullable else self.item_type
            base = {"type": "array", "items": items}
        if self.nullable:
            return {"name": self.name, "type": ["null", base], "default": None}
        return {"name": self.name, "type": base}


def parse_field(spec: str) -> FieldSpec:
    """Parse one catalogue entry such as ``"external_user_id string? pii"``."""
    parts = spec.split()
    name, type_part, flags = parts[0], parts[1], parts[2:]
    nullable = type_part.endswith("?")  # "array<string?>" ends in ">", so stays required
    avro_type = type_part[:-1] if nullable else type_part
    return FieldSpec(name=name, avro_type=avro_type, nullable=nullable, pii="pii" in flags)


@cache
def event_type_fields(event_type: str) -> tuple[FieldSpec, ...]:
    """Fields of a known event type, in writer-schema order (KeyError when unknown)."""
    return tuple(parse_field(spec) for spec in EVENT_TYPE_FIELDS[event_type])


def known_event_types() -> list[str]:
    return sorted(EVENT_TYPE_FIELDS)


@cache
def pii_fields() -> frozenset[str]:
    """Every field name Braze marks as personal data in at least one event type."""
    return frozenset(
        field.name for event_type in EVENT_TYPE_FIELDS for field in event_type_fields(event_type)
        if field.pii
    )


# What a field holds, beyond Braze's own ``pii`` marks: the classes the privacy policy
# (``[mapping.pii]`` class keys, docs/mapping.md, README "Privacy") applies to. Decided by
# name from Braze's field descriptions, for every field of the 94 types, conservatively: a
# field that can quote what a person wrote, what a template rendered or what a remote
# system answered is free text. The same name means the same thing in every type.
FREE_TEXT = "free_text"
URL = "url"
DEVICE_TOKEN = "device_token"
USER_AGENT = "user_agent"
PII = "pii"
PROPERTIES = "properties"
FIELD_CLASSES: dict[str, str] = {
    # free text: written by a person, rendered from a template or returned by a system
    "abort_log": FREE_TEXT,  # why a send was aborted: Liquid output, Connected Content errors
    "bounce_reason": FREE_TEXT,  # SMTP answer; often quotes the recipient's address
    "button_string": FREE_TEXT,  # push button text (templated)
    "deferral_reason": FREE_TEXT,  # SMTP answer
    "element_label": FREE_TEXT,  # RCS element the user clicked
    "error": FREE_TEXT,  # provider / agent error messages
    "flow_response_json": FREE_TEXT,  # what a user entered in a WhatsApp flow
    "input": FREE_TEXT,  # agent console prompt
    "message_body": FREE_TEXT,  # inbound SMS / WhatsApp / RCS / LINE text
    "message_extras": FREE_TEXT,  # key-values rendered by the message_extras Liquid tag
    "output": FREE_TEXT,  # agent console answer
    "provider_error_title": FREE_TEXT,  # WhatsApp provider's error text
    "quick_reply_text": FREE_TEXT,  # the quick reply a user sent
    "raw_response": FREE_TEXT,  # a failed webhook's response body
    "retry_log": FREE_TEXT,  # why a send is retried (provider answers)
    "tool_arguments": FREE_TEXT,  # arguments an agent passed to a tool
    # URLs: their paths and queries can carry ids, addresses and tokens
    "endpoint_url": URL,  # a failed webhook's URL (templated)
    "media_urls": URL,  # media of an inbound SMS / WhatsApp / RCS message (array)
    "short_url": URL,  # shortened link a user clicked
    "url": URL,  # link a user clicked
    "url_path": URL,  # a failed webhook's URL path (templated)
    # push tokens: address one device (web push tokens are endpoint URLs)
    "push_token": DEVICE_TOKEN,
    "push_to_start_token": DEVICE_TOKEN,
    "update_token": DEVICE_TOKEN,
    "web_push_token_public_key": DEVICE_TOKEN,
    "web_push_token_user_auth": DEVICE_TOKEN,
    "web_push_token_vapid_public_key": DEVICE_TOKEN,
    # browser / client identification
    "user_agent": USER_AGENT,
    # identifies a person though Braze does not mark it: WhatsApp's business-scoped user id
    "bsuid": PII,
    # JSON of the customer's own keys: governed by [mapping.properties]
    "properties": PROPERTIES,
    "custom_attributes": PROPERTIES,
}
# The classes [mapping.pii] has a key for, and that key.
CLASS_KEYS: dict[str, str] = {
    FREE_TEXT: "free_text",
    URL: "urls",
    DEVICE_TOKEN: "device_tokens",
    USER_AGENT: "user_agents",
}


def field_class(name: str) -> str | None:
    """What the field ``name`` holds, for the privacy policy: ``free_text``, ``url``,
    ``device_token``, ``user_agent``, ``properties`` (custom JSON), ``pii`` (personal data
    that is none of those: Braze's marks plus ``bsuid``), or None."""
    found = FIELD_CLASSES.get(name)
    if found is not None:
        return found
    return PII if name in pii_fields() else None


@cache
def personal_fields() -> frozenset[str]:
    """Field names ``[mapping.pii]`` accepts one by one: Braze's personal data plus every
    classified free-text, URL, device-token and user-agent field (and ``bsuid``)."""
    return pii_fields() | frozenset(
        name for name, kind in FIELD_CLASSES.items() if kind != PROPERTIES
    )


def record_full_name(event_type: str) -> str:
    return f"{SCHEMA_NAMESPACE_ROOT}.{event_type}"


def writer_schema(event_type: str) -> dict[str, Any]:
    """The Avro record schema Braze writes for ``event_type`` (name, namespace, fields)."""
    namespace, _, name = record_full_name(event_type).rpartition(".")
    return {
        "type": "record",
        "name": name,
        "namespace": namespace,
        "fields": [field.to_avro() for field in event_type_fields(event_type)],
    }


def event_type_from_schema_name(full_name: str) -> str | None:
    """``dataexport.S3.inner.users.messages.email.Send`` → ``users.messages.email.Send``.

    Accepts any connection segment (``dataexport.<X>.inner.``); None when the name does not
    look like a Currents record name.
    """
    parts = full_name.split(".")
    if len(parts) < 4 or parts[0] != "dataexport" or parts[2] != "inner":
        return None
    return ".".join(parts[3:])
