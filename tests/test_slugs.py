"""``slugify_segment``: ASCII key segments from any text, cut with a hash when too long."""

from __future__ import annotations

import re
import unicodedata

import pytest
from django.test import override_settings
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from storage_guard.keys import HASH_CHARS, short_hash, slugify_segment

SLUG = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
HASH_TAIL = re.compile(rf"-[0-9a-f]{{{HASH_CHARS}}}$")
# Arbitrary text, weighted towards the awkward parts of Unicode.
AWKWARD = st.sampled_from([
    "😀", "👩‍👩‍👧", "🇩🇪", "北京", "東京", "مرحبا", "שלום", "\u202e", "e\u0301", "\u0301", "ﬁ",
    "\uff26\uff55\uff4c\uff4c", "ß", "İ", "\x00", "\x1b", "\t", "\n", " ", "/", "..", ".",
    "_", "-", "--",
    "Ä", "ñ", "Ω", "№", "½", "\u200d", "\ufeff",
])
TEXT = st.one_of(
    st.text(),
    st.lists(st.one_of(AWKWARD, st.text(max_size=5)), max_size=40).map("".join),
)


@pytest.mark.parametrize(("value", "expected"), [
    ("Hello, World!", "hello-world"),
    ("  Rechnung März 2025  ", "rechnung-marz-2025"),
    ("Straße", "strasse"),
    ("北京", "bei-jing"),
    ("ﬁle \uff4e\uff41\uff4d\uff45", "file-name"),  # NFKC: a ligature and full-width letters
    ("a__b--c..d  e/f", "a-b-c-d-e-f"),
    ("e\u0301te", "ete"),  # a combining accent composes, then transliterates
    ("Ünïcödé", "unicode"),
    ("tab\tnew\nline\x00nul", "tab-new-line-nul"),
    ("../../etc/passwd", "etc-passwd"),
    (42, "42"),
])
def test_examples(value, expected):
    assert slugify_segment(value) == expected


@pytest.mark.parametrize("value", ["", "😀🎉", "\u0301", "---", "\x00\x01"])
def test_nothing_to_transliterate_gives_the_hash_never_an_empty_slug(value):
    assert slugify_segment(value) == short_hash(value)


def test_a_long_slug_is_cut_and_ends_with_a_hash_of_the_whole_title():
    title = "The quick brown fox jumps over the lazy dog " * 10
    slug = slugify_segment(title, 60)
    assert len(slug) == 60
    assert slug == f"the-quick-brown-fox-jumps-over-the-lazy-dog-the-{short_hash(title)}"


def test_two_long_titles_differing_only_after_the_cut_get_different_slugs():
    common = "annual report " * 30
    assert slugify_segment(common + "2024", 50) != slugify_segment(common + "2025", 50)


def test_the_cut_does_not_leave_a_double_hyphen():
    title = "abcd efgh " * 10
    # The cut falls just after "abcd-": the hyphen goes, so only one joins the hash.
    assert slugify_segment(title, 5 + 1 + HASH_CHARS) == f"abcd-{short_hash(title)}"


def test_max_length_defaults_to_the_setting():
    with override_settings(STORAGE_GUARD={"MAX_SLUG_LENGTH": 20}):
        assert len(slugify_segment("x" * 50)) == 20
    assert len(slugify_segment("x" * 500)) == 200


def test_a_max_length_shorter_than_the_hash_gives_a_prefix_of_the_hash():
    assert slugify_segment("x" * 50, 5) == short_hash("x" * 50, 5)


def test_max_length_must_be_positive():
    with pytest.raises(ValueError, match="at least 1"):
        slugify_segment("x", 0)


def test_nfc_and_nfd_of_the_same_title_give_the_same_slug():
    title = "Café crème brûlée " * 20
    nfd = unicodedata.normalize("NFD", title)
    assert nfd != title
    assert slugify_segment(nfd, 40) == slugify_segment(title, 40)
    assert slugify_segment(nfd) == slugify_segment(title)


@settings(max_examples=300, deadline=None)
@given(value=TEXT, max_length=st.integers(1, 255))
def test_any_text_gives_a_short_ascii_slug(value, max_length):
    slug = slugify_segment(value, max_length)
    assert SLUG.match(slug), slug
    assert 1 <= len(slug) <= max_length
    assert slug.isascii()
    assert slug == slugify_segment(value, max_length)


@settings(max_examples=200, deadline=None)
@given(common=TEXT, a=TEXT, b=TEXT, max_length=st.integers(HASH_CHARS + 2, 80))
def test_distinct_titles_never_share_a_cut_slug(common, a, b, max_length):
    first = "long title " * 10 + common + a
    second = "long title " * 10 + common + b
    assume(unicodedata.normalize("NFC", first) != unicodedata.normalize("NFC", second))
    slug_a, slug_b = slugify_segment(first, max_length), slugify_segment(second, max_length)
    assert HASH_TAIL.search(slug_a) and HASH_TAIL.search(slug_b)
    assert slug_a != slug_b
