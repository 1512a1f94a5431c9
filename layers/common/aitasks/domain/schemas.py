"""JSON Schemas from tenants (an extract task's params.schema), checked and applied with regular expressions that run
in linear time.

jsonschema matches `pattern` and `patternProperties` with Python's `re`, which backtracks: `^(a+)+$` against thirty
a's and a b holds the interpreter for minutes, and with it every thread of the process (the executor's heartbeat
too). Here those keywords are matched by RE2 (google-re2), whose time grows with the text, never exponentially. RE2
has no backreferences or lookaround: a schema whose patterns need them is refused when the task is created.

jsonschema is imported by the functions that need it: it is a tenth of a cold start otherwise.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from typing import Any

# patternProperties is also read by these keywords' own rules: refused together with it (jsonschema would match them
# with Python's re).
_REFUSED_WITH_PATTERN_PROPERTIES = ("unevaluatedProperties",)


@functools.lru_cache(maxsize=256)
def _regex(pattern: str) -> Any:
    import re2

    options = re2.Options()
    options.log_errors = False  # RE2 would print the pattern (a tenant's text) to stderr, that is to the logs
    return re2.compile(pattern, options)


def _walk(schema: Any) -> Iterator[Mapping[str, Any]]:
    """Every subschema (every object) in a schema, without recursion."""
    stack = [schema]
    while stack:
        item = stack.pop()
        if isinstance(item, Mapping):
            yield item
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def schema_problems(schema: Mapping[str, Any]) -> list[str]:
    """Why a tenant's JSON Schema cannot be used: not valid Draft 2020-12, or a pattern RE2 cannot run."""
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError

    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        return [f"not a valid JSON Schema: {exc.message}"]
    import re2

    problems: list[str] = []
    for sub in _walk(schema):
        patterns = []
        if isinstance(sub.get("pattern"), str):
            patterns.append(sub["pattern"])
        if isinstance(sub.get("patternProperties"), Mapping):
            patterns.extend(sub["patternProperties"])
            problems += [
                f"{k} cannot be used with patternProperties" for k in _REFUSED_WITH_PATTERN_PROPERTIES if k in sub
            ]
        for pattern in patterns:
            try:
                _regex(pattern)
            except re2.error:
                problems.append(
                    "a pattern uses what RE2 cannot run (backreferences, lookaround) or is not a regular expression"
                )
                return problems
    return problems


@functools.cache
def _validator_class() -> Any:
    from jsonschema import Draft202012Validator, validators
    from jsonschema.exceptions import ValidationError

    def pattern(validator: Any, patrn: str, instance: Any, schema: Mapping[str, Any]) -> Iterator[ValidationError]:
        if validator.is_type(instance, "string") and not _regex(patrn).search(instance):
            yield ValidationError(f"does not match the schema's pattern {patrn!r}")

    def pattern_properties(
        validator: Any, patterns: Mapping[str, Any], instance: Any, schema: Mapping[str, Any]
    ) -> Iterator[ValidationError]:
        if not validator.is_type(instance, "object"):
            return
        for patrn, subschema in patterns.items():
            for key, value in instance.items():
                if _regex(patrn).search(key):
                    yield from validator.descend(value, subschema, path=key, schema_path=patrn)

    def additional_properties(
        validator: Any, allowed: Any, instance: Any, schema: Mapping[str, Any]
    ) -> Iterator[ValidationError]:
        if not validator.is_type(instance, "object"):
            return
        named = schema.get("properties", {})
        patterns = [_regex(p) for p in schema.get("patternProperties", {})]
        extras = [k for k in instance if k not in named and not any(p.search(k) for p in patterns)]
        if validator.is_type(allowed, "object"):
            for extra in extras:
                yield from validator.descend(instance[extra], allowed, path=extra)
        elif not allowed and extras:
            yield ValidationError(f"additional properties are not allowed ({', '.join(map(repr, sorted(extras)))})")

    return validators.extend(  # type: ignore[no-untyped-call]
        Draft202012Validator,
        {"pattern": pattern, "patternProperties": pattern_properties, "additionalProperties": additional_properties},
    )


def validator(schema: Mapping[str, Any]) -> Any:
    """A Draft 2020-12 validator for a schema that passed schema_problems, its patterns matched by RE2."""
    return _validator_class()(schema)
