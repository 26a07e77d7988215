"""Credentials in URLs (issue 24.1): whatever user-info the HTTP client would send is redacted.

The oracle is httpx's own URL parser (what :class:`diffkit.scrape.client.Fetcher` hands the URL to), not
a second regular expression: for each hostile URL, httpx must see a password (so it would be sent), and
after :func:`redact` httpx must see none, with the host and path unchanged.
"""

from __future__ import annotations

from urllib.parse import quote

import httpx
import pytest

from diffkit.dataset.redact import redact

SECRET = "s3cr3t"
# Passwords the old rule (user-info without whitespace) printed in plain text while httpx sent them.
HOSTILE_PASSWORDS = {
    "space": f"{SECRET} pw",
    "no-break space": f"{SECRET}\u00a0pw",
    "line separator": f"{SECRET}\u2028pw",
    "ideographic space": f"{SECRET}\u3000pw",
    "at sign": f"{SECRET}@pw",
    "backslash": f"{SECRET}\\pw",
    "percent-encoded": f"{SECRET}%20pw",
    "plain": SECRET,
}


@pytest.mark.parametrize("password", HOSTILE_PASSWORDS.values(), ids=HOSTILE_PASSWORDS.keys())
@pytest.mark.parametrize("scheme", ["http", "HTTPS"])
def test_every_userinfo_httpx_would_send_is_redacted(password: str, scheme: str) -> None:
    url = f"{scheme}://alice:{password}@127.0.0.1:8080/random-person.jpeg?r=1"
    sent = httpx.URL(url)
    assert SECRET in sent.password  # the client would send it: it must never be written
    for form in (url, str(sent)):  # as the user typed it, and as httpx prints it (response.url)
        hidden = httpx.URL(redact(form))
        assert (hidden.userinfo, hidden.password) == (b"***", "")
        assert (hidden.scheme, hidden.host, hidden.port, hidden.raw_path) == (
            sent.scheme,
            sent.host,
            sent.port,
            sent.raw_path,
        )
        assert SECRET not in redact(form)
    # Inside a message, as errors and stop reasons quote it, and twice in one text.
    message = f"{url} gave no image (block_page: text/html); tried {str(sent)} -> timeout"
    assert SECRET not in redact(message) and redact(message).count("://***@127.0.0.1:8080/") == 2
    assert redact(message).endswith(
        f" gave no image (block_page: text/html); tried {sent.scheme}://***@127.0.0.1:8080/random-person.jpeg?r=1"
        " -> timeout"
    )


def test_urls_without_credentials_are_unchanged() -> None:
    for text in (
        "http://127.0.0.1:8080/random-person.jpeg",
        "https://example.com/a@b.jpg?mail=me@example.com#x@y",  # "@" after the host: not credentials
        "see https://example.com/ and write to me@example.com",
        "no url here, just me@example.com",
    ):
        assert redact(text) == text
        if text.startswith("http"):
            assert httpx.URL(text).userinfo == b""


def test_credentials_the_client_refuses_are_still_hidden_in_text() -> None:
    """httpx rejects control characters, so such a URL is never sent; a message quoting it must still
    not show the password (the config error names the URL)."""
    for password in (f"{SECRET}\tpw", f"{SECRET}\npw"):
        url = f"http://alice:{password}@host/x"
        with pytest.raises(httpx.InvalidURL):
            httpx.URL(url)
        assert SECRET not in redact(f"the URL {url!r} cannot be parsed")
    # A mistyped scheme (the config error quotes it) and a user-info without a password.
    assert SECRET not in redact(f"only http:// URLs, got '1http://alice:{SECRET}@host/'")
    assert redact(f"htp://{SECRET}@host/x") == "htp://***@host/x"
    assert quote(SECRET) not in redact(f"http://alice:{quote(SECRET + ' ')}@host/")
