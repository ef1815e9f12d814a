"""Tests for gateway.httprule: template parsing, specificity, verbs, 405, escaping, robustness."""

from __future__ import annotations

import time
from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.httprule import (
    ConflictError,
    Matched,
    MethodNotAllowed,
    PathError,
    PathTemplate,
    RouteTable,
    TemplateError,
)


def table(*bindings: tuple[str, str]) -> RouteTable[str]:
    """A route table whose targets are "METHOD template" strings."""
    routes: RouteTable[str] = RouteTable()
    for method, text in bindings:
        routes.add(method, PathTemplate.parse(text), f"{method} {text}")
    return routes


def matched(result: Matched[str] | MethodNotAllowed | None) -> Matched[str]:
    assert isinstance(result, Matched), result
    return result


# --- templates ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "canonical", "segments", "verb"),
    [
        ("/", "/", (), ""),
        ("/v1/rooms", "/v1/rooms", ("v1", "rooms"), ""),
        ("/v1/{name}", "/v1/{name}", ("v1", "*"), ""),
        ("/v1/{name=*}", "/v1/{name}", ("v1", "*"), ""),
        ("/v1/{name=rooms/*}", "/v1/{name=rooms/*}", ("v1", "rooms", "*"), ""),
        ("/v1/{name=rooms/**}", "/v1/{name=rooms/**}", ("v1", "rooms", "**"), ""),
        ("/v1/*/x/**", "/v1/*/x/**", ("v1", "*", "x", "**"), ""),
        ("/v1/{a.b_c}:subscribe", "/v1/{a.b_c}:subscribe", ("v1", "*"), "subscribe"),
        ("/v1/{p=**}:undelete", "/v1/{p=**}:undelete", ("v1", "**"), "undelete"),
        ("/v1/%72ooms/%2f", "/v1/rooms/%2F", ("v1", "rooms", "%2F"), ""),
        ("/v1/a-._~!$&'()+,;@", "/v1/a-._~!$&'()+,;@", ("v1", "a-._~!$&'()+,;@"), ""),
    ],
)
def test_valid_templates_parse_to_canonical_form(
    text: str, canonical: str, segments: tuple[str, ...], verb: str
) -> None:
    template = PathTemplate.parse(text)
    assert (str(template), template.segments, template.verb) == (canonical, segments, verb)
    assert PathTemplate.parse(str(template)) == template


def test_variables_record_field_path_span_and_kind() -> None:
    template = PathTemplate.parse("/v1/{room.name=rooms/*}/msgs/{id}/{rest=**}")
    summary = [(v.field_path, v.start, v.end, v.multi_segment) for v in template.variables]
    assert summary == [
        (("room", "name"), 1, 3, True),
        (("id",), 4, 5, False),
        (("rest",), 5, 6, True),
    ]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "must start with '/'"),
        ("v1/rooms", "must start with '/'"),
        ("/v1//rooms", "empty segment"),
        ("/v1/", "empty segment"),
        ("/v1/**/x", "'**' must be the last segment"),
        ("/{a=**}/x", "'**' must be the last segment"),
        ("/**/{a}", "'**' must be the last segment"),
        ("/v1/{a={b}}", "nested variables"),
        ("/v1/{a{b}}", "nested variables"),
        ("/v1/{a}/{a}", "field 'a' is bound twice"),
        ("/v1/{a}/{a.b}", "field 'a.b' overlaps field 'a'"),
        ("/v1/{a", "unclosed '{'"),
        ("/v1/a}", "unmatched '}'"),
        ("/v1/{}", "invalid field path ''"),
        ("/v1/{1a}", "invalid field path '1a'"),
        ("/v1/{a..b}", "invalid field path 'a..b'"),
        ("/v1/{a}b", "a variable must be a whole segment"),
        ("/v1/***", "'*' and '**' must be whole segments"),
        ("/v1/a*", "character '*' is not allowed in a segment"),
        ("/v1/a b", "character ' ' is not allowed in a segment"),
        ("/v1/caf\u00e9", "character '\u00e9' is not allowed in a segment"),
        ("/v1/a?b", "character '?' is not allowed in a segment"),
        ("/v1/a=b", "character '=' is not allowed in a segment"),
        ("/v1/%G1", "malformed percent-escape '%G1'"),
        ("/v1/%4", "malformed percent-escape '%4'"),
        ("/v1/rooms:", "empty verb"),
        ("/v1/a:b/c", "the verb 'b' must end the template"),
        ("/v1/a:b:c", "the verb 'b' must end the template"),
        ("/:verb", "empty segment"),
        ("/v1/{a=x:y}", "character ':' is not allowed in a variable"),
    ],
)
def test_invalid_templates_name_template_and_problem(text: str, problem: str) -> None:
    with pytest.raises(TemplateError) as caught:
        PathTemplate.parse(text)
    assert problem in str(caught.value)
    assert repr(text) in str(caught.value)
    assert "position" in str(caught.value)


# --- specificity -------------------------------------------------------------------------------

SPECIFICITY_ROUTES = [
    ("GET", "/v1/rooms/special"),
    ("GET", "/v1/rooms/{id}"),
    ("GET", "/v1/*/special"),
    ("GET", "/v1/{rest=**}"),
    ("GET", "/v1/rooms/{id}/**"),
    ("GET", "/v1/{a}/{b}/x"),
    ("GET", "/v1/rooms/{id}:subscribe"),
    ("GET", "/v1/{rest=**}:subscribe"),
    ("POST", "/v1/rooms"),
]

SPECIFICITY_EXPECTED = {
    "/v1/rooms/special": "/v1/rooms/special",
    "/v1/rooms/abc": "/v1/rooms/{id}",
    "/v1/halls/special": "/v1/*/special",
    "/v1/halls/other": "/v1/{rest=**}",
    "/v1": "/v1/{rest=**}",
    "/v1/rooms": "/v1/{rest=**}",
    "/v1/rooms/abc/x": "/v1/rooms/{id}/**",
    "/v1/rooms/abc/x/y": "/v1/rooms/{id}/**",
    "/v1/halls/abc/x": "/v1/{a}/{b}/x",
    "/v1/rooms/abc:subscribe": "/v1/rooms/{id}:subscribe",
    "/v1/halls/abc:subscribe": "/v1/{rest=**}:subscribe",
    "/v1/rooms/special:subscribe": "/v1/rooms/{id}:subscribe",
}


@settings(max_examples=60, deadline=None)
@given(order=st.permutations(SPECIFICITY_ROUTES))
def test_most_specific_route_wins_whatever_the_registration_order(
    order: list[tuple[str, str]],
) -> None:
    routes = table(*order)
    winners = {path: matched(routes.match("GET", path)).target for path in SPECIFICITY_EXPECTED}
    assert winners == {path: f"GET {t}" for path, t in SPECIFICITY_EXPECTED.items()}


def test_literal_prefix_beats_wildcard_even_when_a_later_segment_is_wilder() -> None:
    routes = table(("GET", "/v1/rooms/**"), ("GET", "/v1/*/x"))
    assert matched(routes.match("GET", "/v1/rooms/x")).target == "GET /v1/rooms/**"


def test_star_does_not_match_an_empty_segment() -> None:
    routes = table(("GET", "/v1/rooms/{id}"))
    assert routes.match("GET", "/v1/rooms/") is None


def test_double_star_matches_zero_segments_and_keeps_empty_ones() -> None:
    routes = table(("GET", "/v1/{name=files/**}"))
    assert matched(routes.match("GET", "/v1/files")).bindings == ((("name",), "files"),)
    assert matched(routes.match("GET", "/v1/files/a//b/")).bindings == ((("name",), "files/a//b/"),)


def test_root_template_matches_only_root() -> None:
    routes = table(("GET", "/"))
    assert matched(routes.match("GET", "/")).target == "GET /"
    assert routes.match("GET", "/x") is None


# --- verbs -------------------------------------------------------------------------------------


def test_registered_verb_routes_to_its_binding() -> None:
    routes = table(("GET", "/v1/{name=rooms/*}"), ("POST", "/v1/{room=rooms/*}:subscribe"))
    result = matched(routes.match("POST", "/v1/rooms/abc:subscribe"))
    assert result.target == "POST /v1/{room=rooms/*}:subscribe"
    assert result.bindings == ((("room",), "rooms/abc"),)


def test_unregistered_verb_is_data_of_the_last_segment() -> None:
    routes = table(("GET", "/v1/{name=rooms/*}"), ("GET", "/v1/{x=halls/*}:b"))
    result = matched(routes.match("GET", "/v1/rooms/a:b"))
    assert result.target == "GET /v1/{name=rooms/*}"
    assert result.bindings == ((("name",), "rooms/a:b"),)
    assert matched(routes.match("GET", "/v1/rooms/a:xyz")).bindings == ((("name",), "rooms/a:xyz"),)


def test_colon_in_an_earlier_segment_is_data() -> None:
    routes = table(("GET", "/v1/{a}/{b}"), ("GET", "/v1/{a}:x"))
    assert matched(routes.match("GET", "/v1/p:x/q")).bindings == ((("a",), "p:x"), (("b",), "q"))


def test_encoded_colon_is_never_a_verb_separator() -> None:
    routes = table(("GET", "/v1/{id}"), ("GET", "/v1/{id}:cancel"))
    assert matched(routes.match("GET", "/v1/a%3Acancel")).target == "GET /v1/{id}"
    assert matched(routes.match("GET", "/v1/a:cancel")).target == "GET /v1/{id}:cancel"


# --- methods -----------------------------------------------------------------------------------


def test_path_matching_other_methods_only_is_method_not_allowed_with_allowed_set() -> None:
    routes = table(
        ("GET", "/v1/rooms/{id}"),
        ("DELETE", "/v1/rooms/{id}"),
        ("PATCH", "/v1/{room.name=rooms/*}:rename"),
        ("OPTIONS", "/v1/{any=**}"),
    )
    assert routes.match("PUT", "/v1/rooms/abc") == MethodNotAllowed(
        frozenset({"GET", "DELETE", "OPTIONS"})
    )
    assert routes.match("GET", "/v1/rooms/abc:rename") == MethodNotAllowed(frozenset({"PATCH"}))
    assert routes.match("GET", "/v1/a/b/c") == MethodNotAllowed(frozenset({"OPTIONS"}))
    assert matched(routes.match("OPTIONS", "/v1/rooms/abc")).target == "OPTIONS /v1/{any=**}"


def test_a_method_gets_its_own_best_route_not_the_globally_best_one() -> None:
    routes = table(("POST", "/v1/rooms/special"), ("GET", "/v1/rooms/{id}"))
    assert matched(routes.match("GET", "/v1/rooms/special")).target == "GET /v1/rooms/{id}"


def test_head_does_not_match_get_and_unknown_path_is_none() -> None:
    routes = table(("GET", "/v1/rooms"))
    assert routes.match("HEAD", "/v1/rooms") == MethodNotAllowed(frozenset({"GET"}))
    assert routes.match("GET", "/v2/rooms") is None


def test_invalid_http_method_is_rejected() -> None:
    with pytest.raises(ValueError, match="invalid HTTP method ''"):
        RouteTable[str]().add("", PathTemplate.parse("/v1"), "x")


# --- conflicts ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("/v1/{name=rooms/*}", "/v1/rooms/{id}"),
        ("/v1/{a}/x", "/v1/*/x"),
        ("/v1/{p=**}", "/v1/**"),
        ("/v1/%72ooms", "/v1/rooms"),
        ("/v1/{a}:go", "/v1/{b}:go"),
    ],
)
def test_indistinguishable_bindings_conflict_naming_both(first: str, second: str) -> None:
    routes = table(("GET", first))
    with pytest.raises(ConflictError) as caught:
        routes.add("GET", PathTemplate.parse(second), "second")
    message = str(caught.value)
    assert str(PathTemplate.parse(first)) in message
    assert str(PathTemplate.parse(second)) in message


def test_same_template_under_other_method_or_verb_is_no_conflict() -> None:
    routes = table(
        ("GET", "/v1/{name=rooms/*}"),
        ("POST", "/v1/rooms/{id}"),
        ("GET", "/v1/rooms/{id}:x"),
        ("GET", "/v1/{n=rooms/**}"),
    )
    assert len(routes) == 4


def test_routes_lists_bindings_in_registration_order() -> None:
    bindings = [("POST", "/v1/rooms"), ("GET", "/v1/{name=rooms/*}"), ("GET", "/a")]
    routes = table(*bindings)
    listed = [(method, str(t), target) for method, t, target in routes.routes()]
    assert listed == [(m, t, f"{m} {t}") for m, t in bindings]


# --- escaping ----------------------------------------------------------------------------------


def test_single_segment_variable_is_fully_decoded() -> None:
    routes = table(("GET", "/v1/rooms/{id}"))
    result = matched(routes.match("GET", "/v1/rooms/a%2Fb%2fc%20d+e%C3%A9"))
    assert result.bindings == ((("id",), "a/b/c d+e\u00e9"),)


def test_multi_segment_variable_keeps_encoded_slashes() -> None:
    routes = table(("GET", "/v1/{name=rooms/**}"))
    result = matched(routes.match("GET", "/v1/rooms/a%2Fb/c%2fd/e%20f+g%25"))
    assert result.bindings == ((("name",), "rooms/a%2Fb/c%2fd/e f+g%"),)


def test_literals_compare_after_decoding_unreserved_characters() -> None:
    routes = table(("GET", "/v1/rooms/a~b"), ("GET", "/v1/x@y"))
    assert matched(routes.match("GET", "/v1/%72%6F%6fms/a%7Eb")).target == "GET /v1/rooms/a~b"
    assert routes.match("GET", "/v1/x%40y") is None


@pytest.mark.parametrize(
    ("path", "problem"),
    [
        ("/v1/rooms/%G1", "'%G1'"),
        ("/v1/rooms/%4", "'%4'"),
        ("/v1/%zz/rooms", "'%zz'"),
        ("/v1/rooms/abc%", "'%'"),
    ],
)
def test_malformed_escape_is_a_path_error_naming_it(path: str, problem: str) -> None:
    routes = table(("GET", "/v1/rooms/{id}"))
    with pytest.raises(PathError, match=f"malformed percent-escape {problem}"):
        routes.match("GET", path)


def test_non_utf8_value_is_a_path_error() -> None:
    routes = table(("GET", "/v1/rooms/{id}"))
    with pytest.raises(PathError, match="not valid UTF-8"):
        routes.match("GET", "/v1/rooms/%FF%FE")


def test_path_without_leading_slash_is_a_path_error() -> None:
    with pytest.raises(PathError, match="must start with '/'"):
        table(("GET", "/v1")).match("GET", "v1")


# --- robustness --------------------------------------------------------------------------------


def test_64k_segment_path_matches_quickly_without_recursion() -> None:
    routes = table(("GET", "/v1/{name=files/**}"), ("GET", "/v1/files/{id}/x"))
    deep = "/v1/files/" + "/".join(["s"] * 65536)
    started = time.perf_counter()
    result = matched(routes.match("GET", deep))
    assert routes.match("POST", deep) == MethodNotAllowed(frozenset({"GET"}))
    assert routes.match("GET", "/v2" + deep) is None
    assert time.perf_counter() - started < 2.0
    assert result.bindings[0][1] == "files/" + "/".join(["s"] * 65536)


def test_many_literal_routes_still_match_each_one() -> None:
    routes = table(*[("GET", f"/v1/r{i}/{{id}}") for i in range(2000)])
    assert matched(routes.match("GET", "/v1/r1999/z")).target == "GET /v1/r1999/{id}"


# --- round trip property -----------------------------------------------------------------------

_CHAR = st.one_of(st.sampled_from("/%:+ ~?#"), st.characters(exclude_categories=("Cs",)))
_TEXT = st.text(_CHAR, max_size=8)
_SEGMENT = _TEXT.filter(lambda s: s != "" and "/" not in s)
_LITERAL = st.text("abcxyz019-._~", min_size=1, max_size=4)


@st.composite
def template_and_values(draw: st.DrawFn) -> tuple[str, str, dict[str, str]]:
    """A template, a path built from random values, and the values each field must get back."""
    parts: list[str] = []
    path: list[str] = []
    expected: dict[str, str] = {}
    for index in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["literal", "star", "single", "prefixed"]))
        literal = draw(_LITERAL)
        if kind == "literal":
            parts.append(literal)
            path.append(literal)
        elif kind == "star":
            parts.append("*")
            path.append(quote(draw(_TEXT.filter(bool)), safe=""))
        else:
            value = draw(_TEXT.filter(bool) if kind == "single" else _SEGMENT)
            expected[f"f{index}"] = value if kind == "single" else f"{literal}/{value}"
            parts.append(f"{{f{index}}}" if kind == "single" else f"{{f{index}={literal}/*}}")
            path.append(quote(expected[f"f{index}"], safe="" if kind == "single" else "/"))
    if draw(st.booleans()):
        tail = draw(st.lists(_TEXT.filter(lambda s: "/" not in s), max_size=4))
        expected["rest"] = "/".join(tail)
        parts.append("{rest=**}")
        path.append(quote(expected["rest"], safe="/"))
    verb = draw(st.sampled_from(["", ":watch", ":a-b"]))
    return "/" + "/".join(parts) + verb, "/" + "/".join(path) + verb, expected


@settings(max_examples=200, deadline=None)
@given(case=template_and_values())
def test_encoded_values_match_back_to_the_same_values(
    case: tuple[str, str, dict[str, str]],
) -> None:
    text, path, expected = case
    template = PathTemplate.parse(text)
    assert PathTemplate.parse(str(template)) == template
    routes: RouteTable[str] = RouteTable()
    routes.add("GET", template, text)
    result = matched(routes.match("GET", path))
    assert result.target == text
    assert {".".join(name): value for name, value in result.bindings} == expected


@settings(max_examples=200, deadline=None)
@given(text=st.text("/{}*=:.ab_%2F~ ", max_size=24))
def test_any_template_text_parses_canonically_or_raises_template_error(text: str) -> None:
    outcome: PathTemplate | TemplateError
    try:
        outcome = PathTemplate.parse(text)
    except TemplateError as error:
        outcome = error
    if isinstance(outcome, TemplateError):
        assert repr(text) in str(outcome)
    else:
        assert PathTemplate.parse(str(outcome)) == outcome


@settings(max_examples=200, deadline=None)
@given(path=st.text(_CHAR, max_size=24).map(lambda s: "/" + s))
def test_any_path_matches_or_raises_path_error(path: str) -> None:
    routes = table(("GET", "/{a}"), ("GET", "/{b=x/**}:v"), ("POST", "/x/*/y"))
    outcome: Matched[str] | MethodNotAllowed | PathError | None
    try:
        outcome = routes.match("GET", path)
    except PathError as error:
        outcome = error
    if isinstance(outcome, PathError):
        assert "percent-escape" in str(outcome) or "UTF-8" in str(outcome)
    else:
        assert outcome is None or isinstance(outcome, Matched | MethodNotAllowed)


def test_public_names_are_exported() -> None:
    import gateway.httprule as module

    assert all(hasattr(module, name) for name in module.__all__)
    assert {"PathTemplate", "RouteTable", "Matched", "MethodNotAllowed"} <= set(module.__all__)
