"""Parsing of google.api.http path templates (re-exported by gateway.httprule).

Grammar (google/api/http.proto):

    Template = "/" Segments [ Verb ] ;
    Segments = Segment { "/" Segment } ;
    Segment  = "*" | "**" | LITERAL | Variable ;
    Variable = "{" FieldPath [ "=" Segments ] "}" ;
    FieldPath = IDENT { "." IDENT } ;
    Verb     = ":" LITERAL ;

Invariants of a parsed PathTemplate:
- `segments` holds the template flattened (variables dissolved into their segments): `"*"`,
  `"**"` or a normalized literal; a literal never contains '*', '/', ':', '{', '}' or '='.
- `**` occurs at most once, as the last segment.
- Variables do not nest, their spans do not overlap, and no field path is bound twice or is a
  prefix of another bound field path.
- `str(template)` is the canonical text; parsing it gives an equal template.
- The template "/" (no segments) is accepted and matches only the path "/".
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass

WILDCARD = "*"
MULTI_WILDCARD = "**"

_UNRESERVED = frozenset(string.ascii_letters + string.digits + "-._~")
_LITERAL_CHARS = _UNRESERVED | frozenset("!$&'()+,;@%")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")
_MALFORMED_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")


class TemplateError(ValueError):
    """An invalid path template; the message names the template, the position and the problem."""

    def __init__(self, template: str, position: int, problem: str) -> None:
        super().__init__(f"invalid path template {template!r}: {problem} (at position {position})")
        self.template = template
        self.position = position
        self.problem = problem


def _normalize_escape(match: re.Match[str]) -> str:
    char = chr(int(match.group(1), 16))
    return char if char in _UNRESERVED else match.group(0).upper()


def normalize_literal(text: str) -> str:
    """Decode escapes of unreserved characters and upper-case the rest (escapes pre-checked)."""
    if "%" not in text:
        return text
    return _ESCAPE.sub(_normalize_escape, text)


@dataclass(frozen=True)
class Variable:
    """`{field_path=...}`: binds template segments [start, end) to a request field.

    `multi_segment` when the variable spans several segments or contains `**` (its value keeps
    '/' separators); `open_ended` when it ends in `**` (it then extends to the end of the path).
    """

    field_path: tuple[str, ...]
    start: int
    end: int
    multi_segment: bool
    open_ended: bool


@dataclass(frozen=True)
class PathTemplate:
    """A parsed path template; build it with `PathTemplate.parse`."""

    segments: tuple[str, ...]
    verb: str
    variables: tuple[Variable, ...]

    @classmethod
    def parse(cls, text: str) -> PathTemplate:
        """Parse `text`; raise TemplateError naming the template, position and problem."""
        return _Parser(text).parse()

    def __str__(self) -> str:
        if not self.segments:
            return "/"
        starts = {variable.start: variable for variable in self.variables}
        parts: list[str] = []
        index = 0
        while index < len(self.segments):
            variable = starts.get(index)
            if variable is None:
                parts.append(self.segments[index])
                index += 1
                continue
            inner = self.segments[variable.start : variable.end]
            name = ".".join(variable.field_path)
            pattern = "" if inner == (WILDCARD,) else "=" + "/".join(inner)
            parts.append("{" + name + pattern + "}")
            index = variable.end
        verb = ":" + self.verb if self.verb else ""
        return "/" + "/".join(parts) + verb


class _Parser:
    """A single-pass scanner over one template text (variables nest at most one level)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.segments: list[str] = []
        self.variables: list[Variable] = []
        self.openings: list[int] = []

    def fail(self, problem: str, position: int | None = None) -> TemplateError:
        return TemplateError(self.text, self.pos if position is None else position, problem)

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def parse(self) -> PathTemplate:
        if not self.text.startswith("/"):
            raise self.fail("a template must start with '/'", 0)
        if self.text == "/":
            return PathTemplate((), "", ())
        bad = _MALFORMED_ESCAPE.search(self.text)
        if bad is not None:
            escape = self.text[bad.start() : bad.start() + 3]
            raise self.fail(f"malformed percent-escape {escape!r}", bad.start())
        self.pos = 1
        self.parse_segments(in_variable=False)
        verb = self.parse_verb()
        self.check_variables()
        return PathTemplate(tuple(self.segments), verb, tuple(self.variables))

    def parse_segments(self, *, in_variable: bool) -> None:
        while True:
            self.parse_segment(in_variable=in_variable)
            if self.peek() != "/":
                return
            self.pos += 1

    def parse_segment(self, *, in_variable: bool) -> None:
        if self.segments and self.segments[-1] == MULTI_WILDCARD:
            raise self.fail("'**' must be the last segment (only a verb may follow it)")
        char = self.peek()
        if char == "{":
            if in_variable:
                raise self.fail("nested variables are not allowed")
            self.parse_variable()
        elif char == "*":
            self.parse_wildcard()
        else:
            self.segments.append(self.parse_literal("segment"))

    def parse_wildcard(self) -> None:
        start = self.pos
        self.pos += 2 if self.text.startswith(MULTI_WILDCARD, self.pos) else 1
        if self.peek() not in ("", "/", ":", "}"):
            raise self.fail("'*' and '**' must be whole segments", start)
        self.segments.append(self.text[start : self.pos])

    def parse_literal(self, what: str) -> str:
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos] in _LITERAL_CHARS:
            self.pos += 1
        if self.pos == start:
            char = self.peek()
            if char in ("", "/", ":", "}"):
                raise self.fail(f"empty {what}")
            raise self.fail(f"character {char!r} is not allowed in a {what}")
        if self.peek() not in ("", "/", ":", "}"):
            raise self.fail(f"character {self.peek()!r} is not allowed in a {what}")
        return normalize_literal(self.text[start : self.pos])

    def parse_variable(self) -> None:
        opening = self.pos
        self.openings.append(opening)
        self.pos += 1
        field_path = self.parse_field_path()
        start = len(self.segments)
        if self.peek() == "=":
            self.pos += 1
            self.parse_segments(in_variable=True)
        else:
            self.segments.append(WILDCARD)
        if self.peek() != "}":
            if self.peek() == "":
                raise self.fail("unclosed '{'", opening)
            raise self.fail(f"character {self.peek()!r} is not allowed in a variable")
        self.pos += 1
        if self.peek() not in ("", "/", ":"):
            raise self.fail("a variable must be a whole segment")
        inner = self.segments[start:]
        open_ended = inner[-1] == MULTI_WILDCARD
        multi = len(inner) > 1 or open_ended
        self.variables.append(Variable(field_path, start, len(self.segments), multi, open_ended))

    def parse_field_path(self) -> tuple[str, ...]:
        start = self.pos
        while self.peek() not in ("", "=", "}", "/", "{"):
            self.pos += 1
        text = self.text[start : self.pos]
        if self.peek() == "{":
            raise self.fail("nested variables are not allowed")
        names = tuple(text.split("."))
        if not all(_IDENT.match(name) for name in names):
            raise self.fail(f"invalid field path {text!r}", start)
        return names

    def parse_verb(self) -> str:
        if self.peek() == "":
            return ""
        if self.peek() == "}":
            raise self.fail("unmatched '}'")
        self.pos += 1
        if self.peek() == "":
            raise self.fail("empty verb")
        start = self.pos
        verb = self.parse_literal("verb")
        if self.peek() != "":
            raise self.fail(f"the verb {self.text[start : self.pos]!r} must end the template")
        return verb

    def check_variables(self) -> None:
        seen: list[tuple[str, ...]] = []
        for variable, opening in zip(self.variables, self.openings, strict=True):
            for other in seen:
                shorter = min(len(other), len(variable.field_path))
                if other[:shorter] != variable.field_path[:shorter]:
                    continue
                name, earlier = ".".join(variable.field_path), ".".join(other)
                problem = (
                    f"field {name!r} is bound twice"
                    if other == variable.field_path
                    else f"field {name!r} overlaps field {earlier!r}, which is already bound"
                )
                raise self.fail(problem, opening)
            seen.append(variable.field_path)
