"""The per-record work of an ``EventMapper``, generated once per record layout.

What ``EventMapper.map`` does to a record depends on the event type, the options and the
record's keys, never on its values, and every record fastavro decodes from one writer schema
has the same keys in the same order (its *layout*). So, once per layout, the mapper
generates the Python source of two functions and compiles them (as ``dataclasses`` does for
``__init__``), constants bound as literals or module globals of the generated code:

- ``map_record(record)``: the whole of ``map``;
- ``record_properties(record, braze_id)``: its ``event_properties`` part, generated on
  first use (a profile update sent as ``$identify`` builds its ``$set`` from it).

The record's values are unpacked by position, and for each field what happens (consumed,
dropped, copied, scanned, single-precision rounding) is decided here. Each value's class is
still tested, first against the class the writer schema gives the field (``str`` when there
is no schema): a value of another class, a drifted one or in a dict built by hand, takes the
conversion it always took. Whatever is rare or configuration-heavy (drifted ids and times,
``properties`` that is not JSON text, field policies, renames, ``$identify``) calls the
mapper's own methods, so there is one implementation of each rule.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from currents_export.errors import MAPPING_ERROR
from currents_export.mapping.pii import DROP
from currents_export.support.jsonbytes import json_safe
from currents_export.support.jsonbytes import text_of as _text

# The ``EventMapper`` whose plan is compiled: typed loosely, since this module must not
# import the mapper (which imports it); the mapper hands over what generated code refers to
# (``EventMapper.generated_names``), and the differential tests of ``tests/mapping`` check
# that the generated functions map exactly as the mapper's rules say.
EventMapper = Any
MapFunction = Callable[[dict[str, Any]], Any]  # a record → a MapResult
PropertiesFunction = Callable[
    [dict[str, Any], "str | None"], tuple[dict[str, Any], tuple[str, ...]]
]

# Avro primitive → the class fastavro decodes it to (a logical type decodes otherwise).
_DECODED_AS: dict[str, type] = {
    "string": str, "enum": str, "int": int, "long": int, "boolean": bool,
    "float": float, "double": float,
}
_DIRECT = (str, int, bool, float)  # the classes a value may be copied as, unconverted
_INT64_MAX = 9223372036854775807  # 2**63 - 1: orjson (and Amplitude) take 64-bit integers
_MAX_TIME_S = _INT64_MAX // 1000  # a time in seconds whose ms are still in range


@dataclass(frozen=True, slots=True)
class CompiledLayout:
    """The generated ``map_record`` for one layout, and its source (for reading and tests)."""

    layout: tuple[Any, ...]
    map: MapFunction
    source: str


def value_classes(writer_schema: Mapping[str, Any] | None) -> dict[str, type]:
    """The class fastavro decodes each field of ``writer_schema`` to, for the fields whose
    Avro type (null aside) is one primitive without a logical type."""
    classes: dict[str, type] = {}
    for spec in (writer_schema or {}).get("fields", ()):
        avro_type = spec.get("type")
        if isinstance(avro_type, list):
            branches = [b for b in avro_type if b != "null"]
            avro_type = branches[0] if len(branches) == 1 else None
        if isinstance(avro_type, dict) and "logicalType" not in avro_type:
            avro_type = avro_type.get("type")
        if isinstance(avro_type, str) and avro_type in _DECODED_AS:
            classes[spec["name"]] = _DECODED_AS[avro_type]
    return classes


class _Source:
    """Lines of generated code, and the namespace its names refer to."""

    def __init__(self, namespace: dict[str, Any]) -> None:
        self.lines: list[str] = []
        self.namespace = namespace

    def add(self, indent: int, *lines: str) -> None:
        self.lines.extend("    " * indent + line for line in lines)

    def constant(self, value: Any) -> str:
        """``value`` as an expression: a literal when it is a plain str, else a global."""
        if value.__class__ is str or value is None or value.__class__ is bool:
            return repr(value)
        name = f"_c{len(self.namespace)}"
        self.namespace[name] = value
        return name


def compile_layout(
    mapper: EventMapper, layout: tuple[Any, ...], classes: Mapping[str, type]
) -> CompiledLayout:
    """Generate and compile ``map_record`` for records whose keys are ``layout``, in that
    order (the caller checks), for ``mapper``."""
    src = _source(mapper)
    src.add(0, "def map_record(record):")
    value = _unpacked(src, layout)
    _identity_and_time(src, mapper, value)
    _event(src, mapper, value)
    if mapper._identify:
        src.add(1, "return _mapper._identify_event(event, record)")
    else:
        _properties(src, mapper, layout, classes, value)
        _purchase_and_device(src, mapper)
        src.add(1, "event['event_properties'] = properties",
                "return _Mapped(event, warnings)")
    return CompiledLayout(layout, _compiled(src, "map_record"), "\n".join(src.lines))


def compile_properties(
    mapper: EventMapper, layout: tuple[Any, ...], classes: Mapping[str, type]
) -> PropertiesFunction:
    """Generate and compile ``record_properties`` (the part of ``map_record`` that builds
    ``event_properties``) for records whose keys are ``layout``."""
    src = _source(mapper)
    src.add(0, "def record_properties(record, braze_id):")
    value = _unpacked(src, layout)
    _properties(src, mapper, layout, classes, value)
    src.add(1, "return properties, warnings")
    return _compiled(src, "record_properties")  # type: ignore[no-any-return]


def _source(mapper: EventMapper) -> _Source:
    """An empty source whose namespace holds what generated code refers to."""
    return _Source({"_loads": orjson.loads, "_JSONDecodeError": orjson.JSONDecodeError,
                    "_json_safe": json_safe, "_text": _text, "_DROP": DROP,
                    "_MAPPING_ERROR": MAPPING_ERROR, **mapper.generated_names()})


def _unpacked(src: _Source, layout: tuple[Any, ...]) -> Callable[[Any], str]:
    """Unpack the record's values (``v0``, ``v1``, …); the expression of a field's value by
    name (None when the layout lacks it)."""
    if layout:
        src.add(1, "".join(f"v{i}, " for i in range(len(layout))) + "= record.values()")
    position = {name: index for index, name in enumerate(layout)}
    return lambda name: f"v{position[name]}" if name in position else "None"


def _compiled(src: _Source, name: str) -> Any:
    """Compile ``src`` and return the function ``name`` it defines."""
    text = "\n".join(src.lines) + "\n"
    exec(compile(text, f"<generated {name}>", "exec"), src.namespace)
    return src.namespace[name]


def _identity_and_time(src: _Source, mapper: EventMapper, value: Callable[[str], str]) -> None:
    """The ids (refused when unusable), the id and time checks and the identity."""
    src.add(1, f"event_id = {value('id')}", f"user_id = {value('external_user_id')}",
            f"device_id = {value('device_id')}", f"braze_id = {value('user_id')}", "try:")
    for name, variable in (("id", "event_id"), ("external_user_id", "user_id"),
                           ("device_id", "device_id"), ("user_id", "braze_id")):
        src.add(2, f"if {variable}.__class__ is not str:",
                f"    {variable} = _id_text({variable}, {name!r})")
    detail = "refused.without_value" if mapper._redacts else "str(refused)"
    src.add(1, "except _Refused as refused:",
            f"    return _Rejected(_MAPPING_ERROR, {detail}, refused.without_value)",
            "if not event_id:",
            "    return _Rejected(_NO_EVENT_ID, 'the record has no id')")
    time_s = value("time")
    if value("time_ms") == "None":
        src.add(1, f"if {time_s}.__class__ is int and "
                   f"-{_MAX_TIME_S} <= {time_s} <= {_MAX_TIME_S}:",
                f"    time_ms = {time_s} * 1000",
                "else:",
                f"    time_ms = _drifted_time_ms(None, {time_s})")
    else:
        src.add(1, f"time_ms = {value('time_ms')}",
                f"if time_ms.__class__ is not int or not "
                f"-{_INT64_MAX} <= time_ms <= {_INT64_MAX}:",
                f"    if time_ms is None and {time_s}.__class__ is int and "
                f"-{_MAX_TIME_S} <= {time_s} <= {_MAX_TIME_S}:",
                f"        time_ms = {time_s} * 1000",
                "    else:",
                f"        time_ms = _drifted_time_ms(time_ms, {time_s})")
    redacts = "True" if mapper._redacts else "False"
    src.add(1, "if time_ms is None:",
            f"    return _Rejected(_NO_TIME, _no_time_detail(record, {redacts}))")
    for variable, policy in (("user_id", mapper._user_id_policy), ("device_id", "keep"),
                             ("braze_id", mapper._braze_id_policy)):
        if policy == "drop":  # keep, drop, and any other policy hashes
            src.add(1, f"{variable} = None")
            continue
        src.add(1, f"{variable} = {variable} or None")
        if policy != "keep":
            src.add(1, f"if {variable} is not None:",
                    f"    {variable} = _mapper.options.hash_value({variable})")
    src.add(1, "if user_id is None and device_id is None:")
    if mapper.options.identity_fallback == "braze_id":
        src.add(2, "if not braze_id:", "    return _NO_IDENTITY", "user_id = braze_id")
    else:
        src.add(2, "return _NO_IDENTITY")


def _event(src: _Source, mapper: EventMapper, value: Callable[[str], str]) -> None:
    """The event's name, ids, time, library and backfill flag."""
    if mapper._fixed_name:  # as ``map`` always read it: an empty name is not fixed
        event_type = src.constant(mapper._fixed_name)
    else:
        event_type = "event_type"
        template = mapper._name_template
        src.add(1, f"name = {value('name')}")
        if mapper._rest is None:  # with the scan, the name is scanned: the method does it
            if template.count("{name}") == 1:
                before, after = template.split("{name}")
                named = " + ".join([*([src.constant(before)] if before else []), "name",
                                    *([src.constant(after)] if after else [])])
            else:
                named = f"{src.constant(template)}.replace('{{name}}', name)"
            src.add(1, "if name.__class__ is str and name:", f"    event_type = {named}",
                    "else:")
            src.add(2, "event_type = _custom_event_type(name)")
        else:
            src.add(1, "event_type = _custom_event_type(name)")
    src.add(1, f"event = {{'event_type': {event_type}, 'insert_id': event_id, "
               "'time': time_ms}",
            "if user_id is not None:", "    event['user_id'] = user_id",
            "if device_id is not None:", "    event['device_id'] = device_id",
            f"event['library'] = {src.constant(mapper._library)}")
    if mapper.options.backfill:
        src.add(1, "event[_SKIP_USER_PROPERTIES_SYNC] = True")


def _properties(
    src: _Source, mapper: EventMapper, layout: tuple[Any, ...],
    classes: Mapping[str, type], value: Callable[[str], str],
) -> None:
    """``properties`` and ``warnings``: the custom properties merged first, then every field
    not consumed nor dropped, in the record's order, then the Braze id and the policies."""
    src.add(1, "properties = {}", "warnings = ()")
    if value("properties") != "None":
        src.add(1, f"raw = {value('properties')}", "if raw is not None:")
        plain = not (mapper._custom_json or mapper._dropped or mapper._hashed_props
                     or mapper._renames)
        if plain:  # JSON text, merged with a prefix and nothing else: inline
            prefix = mapper._property_prefix
            src.add(2, "if raw.__class__ is str:",
                    "    try:", "        parsed = _loads(raw)",
                    "    except _JSONDecodeError:",
                    "        warnings = _merge_custom_properties(properties, raw)",
                    "    else:", "        if parsed.__class__ is dict:")
            if prefix:  # the prefixed keys remembered: keys recur in every record
                src.namespace["_prefixed"] = mapper._prefixed.get
                src.add(5, "for key, item in parsed.items():",
                        "    name = _prefixed(key)",
                        "    if name is None:",
                        "        name = _prefix(key)",
                        "    properties[name] = item")
            else:  # a fresh dict holding exactly what the merge would copy
                src.add(5, "properties = parsed")
            src.add(4, "elif parsed is not None:", "    properties['properties'] = parsed")
            src.add(2, "else:",
                    "    warnings = _merge_custom_properties(properties, raw)")
        else:
            src.add(2, "warnings = _merge_custom_properties(properties, raw)")
    rest = mapper._rest
    scan = rest is not None
    if rest is not None:
        src.namespace["_looks"] = rest.looks
        src.namespace["_scan"] = rest.text
    for index, name in enumerate(layout):
        if name in mapper._excluded:
            continue
        key = src.constant(name)
        v = f"v{index}"
        is_float = name in mapper.float_fields
        if scan:
            _scanned_field(src, mapper, name, key, v, is_float)
            continue
        convert = "_float_value" if is_float else "_json_safe"
        expected = classes.get(name, str) if name.__class__ is str else None
        if expected in _DIRECT:
            assert expected is not None
            copied = f"_float32({v})" if expected is float and is_float else v
            src.add(1, f"if {v}.__class__ is {expected.__name__}:",
                    f"    properties[{key}] = {copied}",
                    f"elif {v} is not None:",
                    f"    properties[{key}] = {convert}({v})")
        else:  # a list, a map, a logical type, a union of several: converted as it is
            src.add(1, f"if {v} is not None:", f"    properties[{key}] = {convert}({v})")
    if "user_id" not in mapper._dropped:
        src.add(1, "if braze_id:", "    properties['braze_id'] = braze_id")
    if mapper._rewrites or mapper._renames:
        src.add(1, "_apply_policies(properties)")


def _scanned_field(
    src: _Source, mapper: EventMapper, name: Any, key: str, v: str, is_float: bool
) -> None:
    """One field under the scan: a string scanned unless hashed or scanned on its own (then
    left out when the scan drops it); any other class as ``EventMapper._scan_value``."""
    skip = name in mapper._rest_skip
    if skip:
        src.add(1, f"if {v}.__class__ is str:", f"    properties[{key}] = {v}")
    else:
        src.add(1, f"if {v}.__class__ is str:",
                f"    if _looks({v}):", f"        value = _scan({v})",
                "        if value is not _DROP:", f"            properties[{key}] = value",
                "    else:", f"        properties[{key}] = {v}")
    hashed = name in mapper._hashed
    src.add(1, f"elif {v} is not None:",
            f"    value = _scan_value({v}, {is_float}, {hashed}, {skip})",
            "    if value is not _DROP:", f"        properties[{key}] = value")


def _purchase_and_device(src: _Source, mapper: EventMapper) -> None:
    """A purchase's price, revenue, product and currency; device fields moved to the top."""
    if mapper._is_purchase:
        src.add(1, "unused_price = _set_revenue(event, record)")
        if "price" not in mapper._dropped:
            src.add(1, "if unused_price is not None:",
                    "    properties['price'] = unused_price")
        if mapper._rest is not None:
            src.add(1, "_mapper._scan_values(event, ('productId', 'currency'))",
                    "_mapper._scan_values(properties, ('price',))")
    for name, top_level in mapper._top_level.items():
        src.add(1, f"value = properties.pop({src.constant(name)}, None)",
                "if value is not None:",
                f"    event[{src.constant(top_level)}] = "
                "value if value.__class__ is str else _text(value)")
