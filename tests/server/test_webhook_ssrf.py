"""The SSRF guard. These tests only validate: no connection to any address but 127.0.0.1 is
ever opened (literal IPs are checked without a lookup; names resolve through an injected
resolver, or ``localhost`` through the hosts file)."""

from __future__ import annotations

import asyncio
import ipaddress
import socket

import httpx
import pytest

from collapsewatch_server import errors
from collapsewatch_server.webhooks import ssrf
from tests.webhook_support import Receiver


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("169.254.169.254", "link-local/metadata"),
        ("fd00:ec2::254", "link-local/metadata"),
        ("100.100.100.200", "link-local/metadata"),
        ("::ffff:169.254.169.254", "link-local/metadata"),  # IPv4-mapped
        ("64:ff9b::a9fe:a9fe", "link-local/metadata"),  # NAT64 of 169.254.169.254
        ("169.254.1.1", "link-local"),
        ("fe80::1", "link-local"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("240.0.0.1", "reserved"),
    ],
)
def test_special_addresses_are_refused_even_when_private_ones_are_allowed(
    address: str, kind: str
) -> None:
    ip = ipaddress.ip_address(address)
    expected = errors.WEBHOOK_URL_REFUSED.format(address=ip, kind=kind)
    assert ssrf.refusal(ip, allow_private=False) == expected
    assert ssrf.refusal(ip, allow_private=True) == expected


@pytest.mark.parametrize(
    "address",
    ["10.1.2.3", "172.16.0.1", "172.31.255.254", "192.168.1.10", "100.64.0.1", "fd12::1",
     "fc00::5", "::ffff:10.0.0.1", "192.0.2.1"],
)  # fmt: skip
def test_private_addresses_are_refused_unless_allowed(address: str) -> None:
    ip = ipaddress.ip_address(address)
    assert ssrf.refusal(ip, allow_private=False) == errors.WEBHOOK_URL_PRIVATE.format(address=ip)
    assert ssrf.refusal(ip, allow_private=True) is None


@pytest.mark.parametrize("address", ["127.0.0.1", "127.8.9.10", "::1", "8.8.8.8", "2606:4700::1"])
def test_loopback_and_public_addresses_pass(address: str) -> None:
    assert ssrf.refusal(ipaddress.ip_address(address), allow_private=False) is None


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("file:///etc/passwd", errors.WEBHOOK_URL_SCHEME.format(scheme="file")),
        ("ftp://127.0.0.1/x", errors.WEBHOOK_URL_SCHEME.format(scheme="ftp")),
        ("gopher://127.0.0.1:70/", errors.WEBHOOK_URL_SCHEME.format(scheme="gopher")),
        ("/relative/path", errors.WEBHOOK_URL_NOT_ABSOLUTE),
        ("hooks.example.com/x", errors.WEBHOOK_URL_NOT_ABSOLUTE),
        ("http:///nohost", errors.WEBHOOK_URL_NO_HOST),
        ("http://169.254.169.254/latest/meta-data/",
         errors.WEBHOOK_URL_REFUSED.format(address="169.254.169.254", kind="link-local/metadata")),
        ("http://[fe80::1]:8080/hook",
         errors.WEBHOOK_URL_REFUSED.format(address="fe80::1", kind="link-local")),
        ("https://10.0.0.7/hook", errors.WEBHOOK_URL_PRIVATE.format(address="10.0.0.7")),
        # inet_aton spellings of 169.254.169.254 are caught after resolution
        ("http://2852039166/", None),
    ],
)  # fmt: skip
def test_check_url_refuses_with_a_clear_reason(url: str, message: str | None) -> None:
    with pytest.raises(ssrf.UnsafeTarget) as err:
        ssrf.check_url(url, allow_private=False)
    if message is not None:
        assert str(err.value) == message


def test_check_url_allows_loopback_by_name_and_literal() -> None:
    assert ssrf.check_url("http://127.0.0.1:9/hook", allow_private=False) == [
        ipaddress.ip_address("127.0.0.1")
    ]
    assert all(a.is_loopback for a in ssrf.check_url("http://localhost/", allow_private=False))
    assert ssrf.check_url("http://[::1]:8080/", allow_private=False)


def test_a_name_with_one_bad_address_is_refused() -> None:
    def resolver(host: str, port: int) -> list[ssrf.IPAddress]:
        return [ipaddress.ip_address("93.184.216.34"), ipaddress.ip_address("10.0.0.1")]

    with pytest.raises(ssrf.UnsafeTarget, match=r"10\.0\.0\.1, a private address"):
        ssrf.check_url("https://hooks.example/x", allow_private=False, resolver=resolver)


def test_unresolvable_host_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_such_name(*args: object, **kwargs: object) -> object:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_such_name)  # DNS: the edge of our world
    with pytest.raises(ssrf.UnsafeTarget, match=r"'nowhere\.invalid' does not resolve"):
        ssrf.check_url("http://nowhere.invalid/hook", allow_private=False)


def _client(mapping: dict[str, str], *, allow_private: bool = False) -> httpx.AsyncClient:
    async def resolver(host: str, port: int) -> list[ssrf.IPAddress]:
        return [ipaddress.ip_address(mapping[host])]

    transport = ssrf.guarded_transport(allow_private=allow_private, resolver=resolver)
    return httpx.AsyncClient(transport=transport)


def test_connections_are_checked_again_at_send_time() -> None:
    """A name that resolved to loopback when the webhook was saved now points at the
    metadata service (DNS rebinding): the guarded transport refuses before connecting."""

    async def main() -> None:
        async with _client({"rebound.test": "169.254.169.254"}) as client:
            with pytest.raises(ssrf.UnsafeTarget, match=r"169\.254\.169\.254, a link-local"):
                await client.post("http://rebound.test/hook", content=b"{}")

    asyncio.run(main())


def test_the_guarded_transport_connects_to_the_address_it_checked() -> None:
    """The URL names a host; the connection goes to the checked address (our receiver)."""
    with Receiver() as receiver:

        async def main() -> httpx.Response:
            async with _client({"hooks.test": "127.0.0.1"}) as client:
                return await client.post(f"http://hooks.test:{receiver.port}/hook", content=b"{}")

        assert asyncio.run(main()).status_code == 200
        (arrival,) = receiver.arrivals
        assert arrival.headers["host"] == f"hooks.test:{receiver.port}"
