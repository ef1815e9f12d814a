"""Where tokens come from: Authorization, WebSocket subprotocol, cookie, opt-in query parameter."""

from __future__ import annotations

import pytest

from gateway.auth import InvalidRequest, MissingCredentials
from gateway.credentials import (
    TokenSources,
    Transport,
    find_token,
    redact_query,
    without_bearer_subprotocol,
    without_token_param,
)

TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln"
QUERY = TokenSources(query_param="access_token")


def test_authorization_bearer_works_on_every_transport() -> None:
    for transport in Transport:
        found = find_token({"Authorization": f"Bearer {TOKEN}"}, transport)
        assert found is not None
        assert found.token == TOKEN
        assert found.source == "authorization"
    assert find_token({"authorization": f"bearer  {TOKEN} "}, Transport.HTTP) is not None


def test_no_token_is_none() -> None:
    assert find_token({}, Transport.WEBSOCKET) is None


def test_authorization_errors() -> None:
    with pytest.raises(MissingCredentials, match="must be Bearer"):
        find_token({"Authorization": "Basic YTpi"}, Transport.HTTP)
    with pytest.raises(InvalidRequest, match="has no token"):
        find_token({"Authorization": "Bearer "}, Transport.HTTP)
    with pytest.raises(InvalidRequest, match="well-formed"):
        find_token({"Authorization": "Bearer a b"}, Transport.HTTP)
    two = [("Authorization", f"Bearer {TOKEN}"), ("authorization", f"Bearer {TOKEN}")]
    with pytest.raises(InvalidRequest, match="more than one"):
        find_token(_MultiHeaders(two), Transport.HTTP)


class _MultiHeaders(dict[str, str]):
    """A header mapping with repeated names, like aiohttp's CIMultiDictProxy."""

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        super().__init__(pairs)
        self._pairs = pairs

    def items(self):  # type: ignore[override]  # yields duplicates, as multidicts do
        return list(self._pairs)


def test_cookie_counts_for_sse_and_websocket_only() -> None:
    headers = {"Cookie": f"theme=dark; switchboard_token={TOKEN}; x=1"}
    assert find_token(headers, Transport.HTTP) is None
    for transport in (Transport.SSE, Transport.WEBSOCKET):
        found = find_token(headers, transport)
        assert found is not None
        assert (found.token, found.source) == (TOKEN, "cookie")
    custom = TokenSources(cookie_name="sid")
    assert find_token({"Cookie": f"sid={TOKEN}"}, Transport.SSE, custom) is not None
    assert find_token(headers, Transport.SSE, custom) is None


def test_websocket_subprotocol_token_reports_what_to_echo() -> None:
    headers = {"Sec-WebSocket-Protocol": f"switchboard.v1, bearer, {TOKEN}"}
    found = find_token(headers, Transport.WEBSOCKET)
    assert found is not None
    assert (found.token, found.source, found.subprotocol) == (TOKEN, "subprotocol", "bearer")
    assert find_token(headers, Transport.SSE) is None
    with pytest.raises(InvalidRequest, match="followed by the token"):
        find_token({"Sec-WebSocket-Protocol": "bearer"}, Transport.WEBSOCKET)


def test_query_parameter_is_off_by_default_and_streaming_only() -> None:
    query = [("access_token", TOKEN), ("page_size", "3")]
    assert find_token({}, Transport.SSE, query=query) is None
    assert find_token({}, Transport.HTTP, QUERY, query=query) is None
    found = find_token({}, Transport.WEBSOCKET, QUERY, query=query)
    assert found is not None
    assert found.source == "query"
    with pytest.raises(InvalidRequest, match="more than once"):
        find_token({}, Transport.SSE, QUERY, query=[*query, ("access_token", TOKEN)])


def test_precedence_authorization_then_subprotocol_then_cookie_then_query() -> None:
    headers = {
        "Sec-WebSocket-Protocol": "bearer, from.subprotocol",
        "Cookie": "switchboard_token=from.cookie",
    }
    query = [("access_token", "from.query")]
    found = find_token(headers, Transport.WEBSOCKET, QUERY, query=query)
    assert found is not None
    assert found.token == "from.subprotocol"
    found = find_token({"Cookie": headers["Cookie"]}, Transport.WEBSOCKET, QUERY, query=query)
    assert found is not None
    assert found.token == "from.cookie"
    both = {**headers, "Authorization": "Bearer from.header"}
    found = find_token(both, Transport.WEBSOCKET, QUERY, query=query)
    assert found is not None
    assert found.token == "from.header"


def test_found_token_repr_hides_the_token() -> None:
    found = find_token({"Authorization": f"Bearer {TOKEN}"}, Transport.HTTP)
    assert TOKEN not in repr(found)


def test_query_helpers_strip_and_redact_the_token() -> None:
    query = [("access_token", TOKEN), ("cursor", "a b")]
    assert without_token_param(query, "access_token") == [("cursor", "a b")]
    assert without_token_param(query, None) == query
    redacted = redact_query(f"access_token={TOKEN}&cursor=a%20b", "access_token")
    assert TOKEN not in redacted
    assert redacted == "access_token=REDACTED&cursor=a%20b"
    assert redact_query("cursor=1", "access_token") == "cursor=1"


def test_bridge_negotiates_among_the_subprotocols_other_than_the_token() -> None:
    offered = ["switchboard.json", "bearer", TOKEN, "other"]
    assert without_bearer_subprotocol(offered) == ["switchboard.json", "other"]
    assert without_bearer_subprotocol(["bearer", TOKEN]) == []
    assert without_bearer_subprotocol(["a"]) == ["a"]
