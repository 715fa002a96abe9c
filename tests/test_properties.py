"""Properties that must hold for any input (Hypothesis): the record cutters never change a
record, a next_link is either refused or stays inside the API, and scrubbed text holds no
secret and no control character."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from yarl import URL

from bulkopens._exceptions import BadAnswer, ForeignNextLink
from bulkopens._pagination import record_text, resolve_next, split_results
from bulkopens._redact import Redactor, printable

# Strings that try to break a cutter: the record separator, brackets, quotes, escapes, spaces.
TRICKY = st.sampled_from(["},{", "[", "]", '"', "\\", " ", "\n", "\t", "{", "}", ":", ","])
TEXT = st.lists(st.one_of(TRICKY, st.text(max_size=6)), max_size=6).map("".join)
SCALAR = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**30), 10**30), TEXT
)  # no floats: their text form is the writer's choice, not the API's
FLAT = st.dictionaries(st.text(min_size=1, max_size=8), SCALAR, min_size=1, max_size=6)
NESTED = st.recursive(
    SCALAR,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=8,
)
RECORD = st.dictionaries(st.text(min_size=1, max_size=8), NESTED, min_size=1, max_size=5)


def page(records: list[dict[str, Any]], *, indent: int | None = None) -> bytes:
    envelope = {"meta": {"pagination": {}}, "results": records}
    if indent is None:  # compact, as the API sends it (json: any size of integer)
        return json.dumps(envelope, separators=(",", ":"), ensure_ascii=False).encode()
    return json.dumps(envelope, indent=indent, ensure_ascii=False).encode()


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(FLAT, min_size=1, max_size=8))
def test_the_c_cut_is_exact_or_declines(records: list[dict[str, Any]]) -> None:
    body = page(records)
    text = record_text(body, len(records))
    if text is not None:
        assert [json.loads(line) for line in text.splitlines()] == records
        assert text == b"".join(split_results(body, len(records)))


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(RECORD, max_size=6), st.sampled_from([None, 0, 2]))
def test_split_results_gives_each_record_as_sent_on_one_line(
    records: list[dict[str, Any]], indent: int | None
) -> None:
    body = page(records, indent=indent)
    lines = split_results(body, len(records))
    assert len(lines) == len(records)
    for line, record in zip(lines, records, strict=True):
        assert line.endswith(b"\n")
        assert b"\n" not in line[:-1]
        assert json.loads(line) == record  # every number as it was: no float in between
        # whitespace between tokens aside, the bytes are the answer's own
        assert line[:-1] == json.dumps(record, separators=(",", ":"), ensure_ascii=False).encode()
    with pytest.raises(BadAnswer):
        split_results(body, len(records) + 1)


BASES = [URL("https://api.constantcontact.com"), URL("http://127.0.0.1:8080/ctct")]
SECRETS = ("the-api-key-0123", "the-token-4567")
LINKS = st.one_of(
    st.text(max_size=40),
    st.builds(
        lambda a, b: f"/v2/contacts/1/{a}?next={b}",
        st.text(max_size=12),
        st.text(max_size=12),
    ),
    st.builds(lambda a: f"http://127.0.0.1:8080/ctct/v2/{a}", st.text(max_size=20)),
    st.sampled_from(
        [
            "/v2/../admin",
            "/v2/%2e%2e/admin",
            "//evil.test/v2/x",
            "https://user:pw@api.constantcontact.com/v2/x",
            "/v2/x/the-api-key-0123",
            "javascript:alert(1)",
            "http://[::1/v2",
        ]
    ),
)


@settings(max_examples=500)
@given(st.sampled_from(BASES), LINKS)
def test_a_next_link_is_refused_or_stays_inside_the_api(base: URL, link: str) -> None:
    refused: ForeignNextLink | None = None
    try:
        url = resolve_next(base, link, SECRETS)
    except ForeignNextLink as exc:
        refused = exc
    if refused is not None:
        assert "\x1b" not in str(refused)
        return
    assert (url.scheme, url.host, url.port) == (base.scheme, base.host, base.port)
    assert url.raw_user is None
    assert url.path.startswith(base.path.rstrip("/") + "/v2/")
    assert "api_key" not in url.query
    assert not {".", ".."} & set(re.split(r"[/\\]", url.path))
    assert not any(secret in str(url) for secret in SECRETS)


@given(st.text(max_size=60), st.sampled_from(SECRETS))
def test_redacted_text_holds_no_secret(text: str, secret: str) -> None:
    redact = Redactor(*SECRETS)
    assert secret not in redact(text[: len(text) // 2] + secret + text[len(text) // 2 :])


@given(st.text(max_size=80))
def test_printable_text_holds_no_control_character(text: str) -> None:
    shown = printable(text)
    assert not re.search(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]", shown)
