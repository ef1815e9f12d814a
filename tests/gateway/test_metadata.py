"""Headers ↔ metadata and the Grpc-Timeout syntax, sans-IO."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.metadata import (
    MetadataError,
    parse_grpc_timeout,
    request_metadata,
    response_headers,
    wants_trailers,
)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("5S", 5.0), ("100m", 0.1), ("2M", 120.0), ("1H", 3600.0), ("250u", 250e-6), ("7n", 7e-9)],
)
def test_grpc_timeout_units(text: str, seconds: float) -> None:
    assert parse_grpc_timeout(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "5", "S", "5s", "123456789S", "-1S", "1.5S", "5 S"])
def test_invalid_grpc_timeout_names_the_header(text: str) -> None:
    with pytest.raises(MetadataError, match="Grpc-Timeout") as caught:
        parse_grpc_timeout(text)
    assert caught.value.header == "Grpc-Timeout"


@settings(max_examples=200)
@given(st.integers(min_value=0, max_value=99_999_999), st.sampled_from("HMSmun"))
def test_every_well_formed_timeout_parses(amount: int, unit: str) -> None:
    assert parse_grpc_timeout(f"{amount}{unit}") >= 0


def _metadata(
    headers: list[tuple[str, str]], *, allowlist: tuple[str, ...] = ()
) -> dict[str, str | bytes]:
    metadata = request_metadata(
        headers, allowlist=allowlist, peer="10.0.0.9", host="gw.example", request_id="rid-1"
    )
    return dict(metadata)


def test_forwarded_headers_are_selected_and_renamed() -> None:
    metadata = _metadata(
        [
            ("Authorization", "Bearer t"),
            ("Grpc-Metadata-Tenant", "acme"),
            ("X-Custom", "kept"),
            ("X-Other", "dropped"),
            ("Connection", "keep-alive"),
            ("Host", "gw.example"),
            ("Content-Length", "3"),
        ],
        allowlist=("x-custom",),
    )
    assert metadata == {
        "authorization": "Bearer t",
        "tenant": "acme",
        "x-custom": "kept",
        "x-forwarded-for": "10.0.0.9",
        "x-forwarded-host": "gw.example",
        "x-request-id": "rid-1",
    }


def test_forwarded_for_and_host_are_appended() -> None:
    metadata = _metadata([("X-Forwarded-For", "1.1.1.1"), ("X-Forwarded-Host", "edge.example")])
    assert metadata["x-forwarded-for"] == "1.1.1.1, 10.0.0.9"
    assert metadata["x-forwarded-host"] == "edge.example, gw.example"


def test_bin_headers_are_base64_decoded() -> None:
    raw = b"\x00\xffbinary"
    padded = base64.b64encode(raw).decode()
    unpadded = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    assert _metadata([("Grpc-Metadata-Blob-Bin", padded)])["blob-bin"] == raw
    assert _metadata([("Grpc-Metadata-Blob-Bin", unpadded)])["blob-bin"] == raw
    with pytest.raises(MetadataError, match="Grpc-Metadata-Blob-Bin"):
        _metadata([("Grpc-Metadata-Blob-Bin", "!!not base64!!")])


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("Grpc-Metadata-Grpc-Timeout", "1S"),
        ("Grpc-Metadata-Bad Key", "v"),
        ("Grpc-Metadata-Text", "caf\u00e9"),
        ("Grpc-Metadata-Connection", "close"),
    ],
)
def test_unsendable_metadata_is_rejected_by_name(name: str, value: str) -> None:
    with pytest.raises(MetadataError) as caught:
        _metadata([(name, value)])
    assert caught.value.header == name


def test_response_metadata_becomes_prefixed_headers() -> None:
    result = response_headers(
        [("x-http-code", "201"), ("etag", "abc"), ("blob-bin", b"\x01\x02")],
        [("grpc-status", "0"), ("checksum", "c1")],
        send_trailers=True,
    )
    assert result.http_code == 201
    assert result.headers == (
        ("Grpc-Metadata-etag", "abc"),
        ("Grpc-Metadata-blob-bin", base64.b64encode(b"\x01\x02").decode()),
        ("Grpc-Trailer-checksum", "c1"),
    )


def test_trailers_only_when_asked_and_bad_codes_ignored() -> None:
    result = response_headers([("x-http-code", "700")], [("checksum", "c1")])
    assert result.http_code is None
    assert result.headers == ()


def test_te_trailers_detection() -> None:
    assert wants_trailers({"TE": "trailers"})
    assert wants_trailers({"TE": "gzip, trailers;q=1"})
    assert not wants_trailers({"TE": "gzip"})
    assert not wants_trailers({})
