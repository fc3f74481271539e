"""The SSRF guard: a webhook may only reach addresses a user could reach from outside.

A webhook URL is chosen by whoever holds the admin token, and the server requests it from
inside its own network, so a target must not be a cloud metadata endpoint, a link-local or
otherwise special address, or (unless ``webhook_allow_private``) a private network. Loopback is
allowed: the common local setup is a receiver on the same machine.

Two checks: :func:`check_url` when a webhook is created or changed (an error names the address),
and :func:`guarded_transport` at every connection the deliverer opens. The second resolves the
host itself, checks every address and connects to the checked address, so a DNS answer that
changes between the check and the connection (rebinding) cannot slip through.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import httpcore
import httpx

from collapsewatch_server import errors

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
#: ``(host, port) -> addresses``; tests inject one so no name is ever looked up for real.
Resolver = Callable[[str, int], list[IPAddress]]
AsyncResolver = Callable[[str, int], Awaitable[list[IPAddress]]]

#: Cloud metadata services (AWS/GCP/Azure/OpenStack, AWS over IPv6, Alibaba).
METADATA = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200")
)
#: Refused unless private targets are allowed. Anything else that is not globally routable
#: (documentation, benchmarking, "this network" ranges) counts as private too.
PRIVATE = tuple(
    ipaddress.ip_network(n)
    for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7")
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class UnsafeTarget(ValueError):
    """A URL the guard refuses; the message says why (and is safe to show the user)."""


def _embedded_v4(ip: IPAddress) -> IPAddress:
    """The IPv4 address inside an IPv6 one that only wraps it (mapped, NAT64, 6to4)."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
        if ip in _NAT64:
            return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if ip.sixtofour is not None:
            return ip.sixtofour
    return ip


def refusal(address: IPAddress, *, allow_private: bool) -> str | None:
    """Why ``address`` is refused (a message), or None when it may be contacted."""
    ip = _embedded_v4(address)
    shown = str(address)
    if ip in METADATA:
        return errors.WEBHOOK_URL_REFUSED.format(address=shown, kind="link-local/metadata")
    if ip.is_loopback:
        return None
    for kind, hit in (
        ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("unspecified", ip.is_unspecified),
        ("reserved", ip.is_reserved),
    ):
        if hit:
            return errors.WEBHOOK_URL_REFUSED.format(address=shown, kind=kind)
    private = any(ip in net for net in PRIVATE) or not ip.is_global
    if private and not allow_private:
        return errors.WEBHOOK_URL_PRIVATE.format(address=shown)
    return None


def check_addresses(addresses: Iterable[IPAddress], *, allow_private: bool) -> None:
    """Raise :class:`UnsafeTarget` if any address is refused: a host with one bad address is
    bad, since the connection might pick that one."""
    for address in addresses:
        reason = refusal(address, allow_private=allow_private)
        if reason is not None:
            raise UnsafeTarget(reason)


def parse_target(url: str) -> tuple[str, int]:
    """``(host, port)`` of an http(s) URL, parsed the way the sender (httpx) will parse it."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        raise UnsafeTarget(errors.WEBHOOK_URL_INVALID.format(reason=exc)) from None
    if not parsed.scheme:
        raise UnsafeTarget(errors.WEBHOOK_URL_NOT_ABSOLUTE)
    if parsed.scheme not in ("http", "https"):
        raise UnsafeTarget(errors.WEBHOOK_URL_SCHEME.format(scheme=parsed.scheme))
    if not parsed.host:
        raise UnsafeTarget(errors.WEBHOOK_URL_NO_HOST)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    return parsed.host, port


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _addresses(infos: Iterable[tuple[Any, ...]]) -> list[IPAddress]:
    seen: dict[IPAddress, None] = {}
    for info in infos:
        seen[ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])] = None
    return list(seen)


def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address of ``host``; an IP literal is returned as it is, without any lookup."""
    literal = _literal(host)
    if literal is not None:
        return [literal]
    try:
        return _addresses(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
    except (OSError, UnicodeError) as exc:
        raise UnsafeTarget(errors.WEBHOOK_URL_UNRESOLVABLE.format(host=host, reason=exc)) from None


async def resolve_async(host: str, port: int) -> list[IPAddress]:
    """:func:`resolve` without blocking the event loop."""
    literal = _literal(host)
    if literal is not None:
        return [literal]
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise UnsafeTarget(errors.WEBHOOK_URL_UNRESOLVABLE.format(host=host, reason=exc)) from None
    return _addresses(infos)


def check_url(url: str, *, allow_private: bool, resolver: Resolver = resolve) -> list[IPAddress]:
    """Check a webhook URL (scheme, host, every resolved address); return the addresses or
    raise :class:`UnsafeTarget`. Blocking (DNS): call it from a thread, not the event loop."""
    host, port = parse_target(url)
    addresses = resolver(host, port)
    if not addresses:
        raise UnsafeTarget(errors.WEBHOOK_URL_UNRESOLVABLE.format(host=host, reason="no address"))
    check_addresses(addresses, allow_private=allow_private)
    return addresses


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """A network backend that resolves, checks and connects to the checked address itself.

    TLS still verifies the certificate against the URL's host name: httpcore passes the
    origin's host as ``server_hostname`` to ``start_tls``, independent of what we connect to.
    """

    def __init__(
        self,
        inner: httpcore.AsyncNetworkBackend,
        *,
        allow_private: bool,
        resolver: AsyncResolver = resolve_async,
    ) -> None:
        self._inner = inner
        self._allow_private = allow_private
        self._resolver = resolver

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = await self._resolver(host, port)
        if not addresses:
            raise UnsafeTarget(
                errors.WEBHOOK_URL_UNRESOLVABLE.format(host=host, reason="no address")
            )
        check_addresses(addresses, allow_private=self._allow_private)
        last: Exception | None = None
        for address in addresses:  # the resolver's order, like a plain connect would
            try:
                return await self._inner.connect_tcp(
                    str(address),
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
        assert last is not None
        raise last

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.AsyncNetworkStream:
        raise UnsafeTarget("unix sockets are not webhook targets")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def guarded_transport(
    *, allow_private: bool, resolver: AsyncResolver = resolve_async
) -> httpx.AsyncHTTPTransport:
    """An httpx transport whose every new connection goes through :class:`GuardedBackend`.

    httpx has no public switch for the network backend, so it is swapped on the transport's
    connection pool; ``tests/server/test_webhook_ssrf.py`` proves the swap still takes effect.
    Passing a transport also turns off proxies from the environment: a proxy would resolve
    the host itself, out of the guard's sight.
    """
    transport = httpx.AsyncHTTPTransport(retries=0)
    pool: Any = transport._pool
    pool._network_backend = GuardedBackend(
        pool._network_backend, allow_private=allow_private, resolver=resolver
    )
    return transport
