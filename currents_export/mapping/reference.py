"""The mapping reference (docs/mapping.md), generated from the mapper itself.

``python -m currents_export.mapping.reference > docs/mapping.md`` rewrites it; a test fails
when the document and the code disagree.
"""

from __future__ import annotations

from currents_export.currents.schemas import (
    CLASS_KEYS,
    FIELD_CLASSES,
    event_type_fields,
    field_class,
    known_event_types,
)
from currents_export.mapping.mapper import EventMapper, MappingOptions

_HEADER = """# Mapping reference

Generated from the code by `python -m currents_export.mapping.reference > docs/mapping.md`
(a test fails when this file and the code disagree). It shows the default options of each
profile; a configuration file (see the README, "Mapping configuration") can disable types,
rename or drop fields, hash or drop personal data, move device fields to the top level and
turn profile updates into `$identify` operations — `currents-export inspect FILE --config
FILE` shows the mapping that applies to a file under a configuration.

Every event also gets `library` (`Braze` under `braze`, `currents-export` under `plain`).
Fields marked **pii** are those Braze documents as personal data. The **class** column says
what a field holds for the privacy policy (README, "Privacy"): `free_text`, `url`,
`device_token`, `user_agent`, `pii` (personal data that is none of those) or `properties`
(the customer's own JSON, under `[mapping.properties]`). The `[mapping.pii]` table sets
`keep`, `hash` or `drop` (and `strip_query` for URLs) for each field of a class but
`properties`, and for whole classes with the keys `free_text`, `urls`, `device_tokens` and
`user_agents`. With `[mapping.properties].scan` on, every kept text of an event (these
classes, the unclassified fields and the custom event's name; not the ids) is also scanned
for e-mail addresses and phone numbers; `inspect --config` shows it per field. `{name}` is
the custom event's own name.
"""


def field_routes(
    event_type: str, options: MappingOptions
) -> list[tuple[str, bool, str]]:
    """(field, is personal data, where it goes) for every field of ``event_type``."""
    mapper = EventMapper(event_type, options)
    return [(spec.name, spec.pii, mapper.destination(spec.name))
            for spec in event_type_fields(event_type)]


def render_reference() -> str:
    """The whole reference as Markdown: every type, under both profiles."""
    profiles = {"braze": MappingOptions(profile="braze"), "plain": MappingOptions(profile="plain")}
    lines = [_HEADER]
    lines.append("## Event types\n")
    lines.append("| Currents type | `event_type` (braze) | `event_type` (plain) |")
    lines.append("|---|---|---|")
    for event_type in known_event_types():
        names = [EventMapper(event_type, o).amplitude_event_type for o in profiles.values()]
        lines.append(f"| `{event_type}` | `{names[0]}` | `{names[1]}` |")
    lines.append("\n## Privacy classes\n")
    lines.append("| class | `[mapping.pii]` class key | fields |")
    lines.append("|---|---|---|")
    classes = sorted(set(FIELD_CLASSES.values()) | {"pii"})
    every = sorted({spec.name for t in known_event_types() for spec in event_type_fields(t)})
    for kind in classes:
        members = ", ".join(f"`{n}`" for n in every if field_class(n) == kind)
        key = CLASS_KEYS.get(kind)
        lines.append(f"| `{kind}` | {f'`{key}`' if key else '—'} | {members} |")
    lines.append("\n## Fields per type\n")
    for event_type in known_event_types():
        lines.append(f"### {event_type}\n")
        braze = field_routes(event_type, profiles["braze"])
        plain = field_routes(event_type, profiles["plain"])
        lines.append("| Field | pii | class | braze | plain |")
        lines.append("|---|---|---|---|---|")
        for (name, pii, to_braze), (_, _, to_plain) in zip(braze, plain, strict=True):
            kind = field_class(name) or ""
            lines.append(f"| `{name}` | {'pii' if pii else ''} | {kind} | {to_braze} "
                         f"| {to_plain} |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    print(render_reference(), end="")
