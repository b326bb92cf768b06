"""``check_headers``: metadata and header sections S3 would refuse are refused here first."""

from __future__ import annotations

import datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from storage_guard import keys
from storage_guard.errors import HeadersTooLarge, InvalidHeader, SaveRejected
from storage_guard.saving.headers import (
    FIXED_ALLOWANCE,
    TOKEN_CHARS,
    check_headers,
    header_sizes,
    metadata_bytes,
)

LIMITS = {"max_metadata_bytes": 2048, "max_header_bytes": 8192}


def test_check_headers_is_re_exported_from_keys():
    with pytest.deprecated_call(match="storage_guard.saving.headers.check_headers") as caught:
        assert keys.check_headers is check_headers
    assert caught[0].filename == __file__  # the warning points at the caller


def test_ordinary_params_pass():
    params = {"ContentType": "image/jpeg", "CacheControl": "max-age=86400",
              "ContentDisposition": 'attachment; filename="photo.jpg"',
              "Metadata": {"uploaded-by": "42", "sha256": "0" * 64}, "ACL": "private",
              "Expires": datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC),
              "BucketKeyEnabled": True}
    check_headers("media/photos/photo.jpg", params, **LIMITS)


def test_metadata_is_counted_in_utf8_bytes_of_keys_and_values():
    assert metadata_bytes({"abc": "défg"}) == 3 + 5
    assert metadata_bytes({"名前": "値"}) == 6 + 3
    assert metadata_bytes(None) == 0


def test_metadata_exactly_at_the_limit_passes_one_byte_over_is_refused():
    check_headers("k", {"Metadata": {"note": "x" * 2044}}, **LIMITS)
    with pytest.raises(HeadersTooLarge) as caught:
        check_headers("k", {"Metadata": {"note": "x" * 2045}}, **LIMITS)
    error = caught.value
    assert isinstance(error, SaveRejected) and error.code == "HeadersTooLarge"
    assert error.context["metadata_bytes"] == 2049
    assert error.context["limit"] == 2048
    assert error.context["exceeded"] == ["metadata"]
    assert error.context["largest"] == [["x-amz-meta-note", 2064]]
    assert str(error) == (
        "[HeadersTooLarge] user metadata is 2049 bytes, over max_metadata_bytes=2048 for key 'k';"
        " largest headers: x-amz-meta-note (2064 bytes)")


def test_r2_sized_metadata_passes_with_a_higher_limit():
    params = {"Metadata": {"a": "x" * 3000, "b": "y" * 3000}}
    check_headers("k", params, max_metadata_bytes=8192, max_header_bytes=16384)
    with pytest.raises(HeadersTooLarge):
        check_headers("k", params, **LIMITS)


def test_a_large_header_section_names_the_largest_headers_first():
    params = {"ContentType": "text/plain", "ContentDisposition": "a" * 5000,
              "CacheControl": "b" * 3000, "Metadata": {"small": "1"}}
    with pytest.raises(HeadersTooLarge) as caught:
        check_headers("docs/a.txt", params, **LIMITS)
    error = caught.value
    assert error.context["exceeded"] == ["headers"]
    assert error.context["limit"] == 8192
    assert error.context["header_bytes"] > 8192
    names = [name for name, _ in error.context["largest"]]
    assert names[:2] == ["Content-Disposition", "Cache-Control"]
    assert "request headers are an estimated" in error.message
    assert "over max_header_bytes=8192" in error.message
    assert error.message.index("Content-Disposition") < error.message.index("Cache-Control")


def test_both_limits_over_are_both_reported():
    params = {"Metadata": {"n": "x" * 9000}}
    with pytest.raises(HeadersTooLarge) as caught:
        check_headers("k", params, **LIMITS)
    assert caught.value.context["exceeded"] == ["metadata", "headers"]
    assert caught.value.context["limit"] == 2048
    assert "user metadata is 9001 bytes" in caught.value.message
    assert "request headers are an estimated" in caught.value.message


def test_the_url_encoded_key_counts_towards_the_header_section():
    key = "é" * 1000  # 2000 bytes, 6000 characters once percent-encoded
    check_headers(key, {}, max_metadata_bytes=2048, max_header_bytes=8192)
    with pytest.raises(HeadersTooLarge, match="request headers are an estimated"):
        check_headers(key * 2, {}, max_metadata_bytes=2048, max_header_bytes=8192)


def test_an_empty_request_is_the_fixed_allowance_plus_the_request_line():
    with pytest.raises(HeadersTooLarge) as caught:
        check_headers("k", {}, max_metadata_bytes=2048, max_header_bytes=FIXED_ALLOWANCE)
    assert FIXED_ALLOWANCE < caught.value.context["header_bytes"] < FIXED_ALLOWANCE + 100


def test_header_sizes_maps_params_to_wire_headers():
    sizes = header_sizes({"ContentType": "a/b", "Metadata": {"k": "v"}, "StorageClass": "X",
                          "NotAHeader": "ignored"})
    assert sizes == {"Content-Type": len("Content-Type: a/b\r\n"),
                     "x-amz-meta-k": len("x-amz-meta-k: v\r\n"),
                     "x-amz-storage-class": len("x-amz-storage-class: X\r\n")}


META_NAMES = st.text(st.sampled_from(sorted(TOKEN_CHARS)), min_size=1, max_size=30)
META_VALUES = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=400)


@settings(max_examples=200, deadline=None)
@given(metadata=st.dictionaries(META_NAMES, META_VALUES, max_size=12))
def test_refused_exactly_when_over_a_limit(metadata):
    params = {"ContentType": "application/octet-stream", "Metadata": metadata}
    meta = sum(len(k.encode()) + len(v.encode()) for k, v in metadata.items())
    try:
        check_headers("media/x.bin", params, **LIMITS)
    except HeadersTooLarge as error:
        assert error.context["metadata_bytes"] == meta
        assert meta > 2048 or error.context["header_bytes"] > 8192
        largest = [size for _, size in error.context["largest"]]
        assert largest == sorted(largest, reverse=True)
    else:
        assert meta <= 2048


# ----------------------------------------------------------------------- characters


@pytest.mark.parametrize(("params", "header", "position", "named"), [
    ({"ContentType": "image/png\nx: y"}, "Content-Type", 9, "line feed (U+000A)"),
    ({"ContentType": "text/plain\r"}, "Content-Type", 10, "carriage return (U+000D)"),
    ({"CacheControl": "max-age=1\x00"}, "Cache-Control", 9, "NUL (U+0000)"),
    ({"ContentDisposition": 'inline; filename="a\r\nb"'}, "Content-Disposition", 19,
     "carriage return (U+000D)"),
    ({"ContentEncoding": "gzip\x1b"}, "Content-Encoding", 4, "control character (U+001B)"),
    ({"ContentLanguage": "de\u0085"}, "Content-Language", 2, "U+0085"),
    ({"StorageClass": "STANDARD\x7f"}, "x-amz-storage-class", 8, "DEL (U+007F)"),
    ({"Metadata": {"note": "caf\u00e9"}}, "x-amz-meta-note", 3, "non-ASCII"),
    ({"Metadata": {"note": "a\ud800"}}, "x-amz-meta-note", 1, "lone surrogate (U+D800)"),
    ({"ContentDisposition": "attachment; filename=\u202egnp.exe"}, "Content-Disposition", 21,
     "RIGHT-TO-LEFT OVERRIDE"),
])
def test_a_value_http_cannot_carry_is_refused_naming_header_and_position(
        params, header, position, named):
    with pytest.raises(InvalidHeader) as caught:
        check_headers("media/x.bin", params, **LIMITS)
    error = caught.value
    assert isinstance(error, SaveRejected) and error.code == "InvalidHeader"
    assert error.context["header"] == header and error.context["position"] == position
    assert f"header {header} value has " in str(error) and named in str(error)
    assert f"at position {position}" in str(error)
    assert "\n" not in str(error) and "\r" not in str(error)


@pytest.mark.parametrize(("name", "shown"), [
    ("bad name", "SPACE (U+0020)"), ("bad\nname", "line feed (U+000A)"),
    ("名前", "CJK UNIFIED IDEOGRAPH-540D"), ("a:b", "COLON (U+003A)")])
def test_a_metadata_name_must_be_an_http_token(name, shown):
    with pytest.raises(InvalidHeader) as caught:
        check_headers("k", {"Metadata": {name: "v"}}, **LIMITS)
    assert shown in str(caught.value)


@pytest.mark.parametrize("params", [
    {"ContentType": b"image/png"}, {"Metadata": {"a": b"v"}}, {"Metadata": ["a", "b"]},
    {"CacheControl": None}])
def test_a_value_that_is_not_text_is_refused(params):
    with pytest.raises(InvalidHeader, match="must be"):
        check_headers("k", params, **LIMITS)


def test_tabs_and_non_header_params_pass():
    check_headers("k", {"CacheControl": "max-age=1,\tpublic", "NotAHeader": "\n\x00",
                        "Metadata": {"a-b.c_d": "printable ~ ASCII !"}}, **LIMITS)


@settings(max_examples=300, deadline=None)
@given(value=st.text(max_size=40))
def test_any_text_is_either_sent_or_refused_as_invalid_header(value):
    sendable = all(c == "\t" or 0x20 <= ord(c) <= 0x7E for c in value)
    try:
        check_headers("k", {"ContentType": value, "Metadata": {"v": value}}, **LIMITS)
    except InvalidHeader:
        assert not sendable
    else:
        assert sendable


def test_params_checked_once_are_still_refused_with_a_key_too_long_for_them():
    """The memo of checked params holds their headers' size, not a verdict: a longer key with
    the same params is measured again and refused; a bad value is never memoized."""
    params = {"ContentType": "text/plain", "CacheControl": "max-age=60"}
    check_headers("short.txt", params, **LIMITS)
    with pytest.raises(HeadersTooLarge):
        check_headers("k" * 8000, params, **LIMITS)
    bad = {"ContentType": "text/plain\r\nX-Evil: 1"}
    for _try in range(2):
        with pytest.raises(InvalidHeader):
            check_headers("short.txt", bad, **LIMITS)
    with pytest.raises(HeadersTooLarge):  # metadata is never memoized: measured every time
        check_headers("short.txt", {"Metadata": {"m": "v" * 3000}}, **LIMITS)


def test_the_memo_of_checked_params_stays_bounded():
    from storage_guard.saving import headers

    for number in range(headers.CHECKED_MEMO_SIZE * 2):
        check_headers("k.txt", {"ContentType": f"type/{number}"}, **LIMITS)
    assert 0 < len(headers._checked_text_params) <= headers.CHECKED_MEMO_SIZE
