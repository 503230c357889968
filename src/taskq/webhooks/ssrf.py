"""SSRF guard for webhook targets: URL rules, and every resolved address must be public or allow-listed.

The sender runs the same check inside its DNS resolver, so the address it checked is the address
it connects to (DNS-rebinding safe); the intake calls `check_url` once at admission.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterable, Sequence
from urllib.parse import urlsplit

from taskq.errors import UnsafeTarget

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], Awaitable[list[str]]]
SyncResolver = Callable[[str, int], list[str]]


def _table(*rows: tuple[str, str]) -> tuple[tuple[Network, str], ...]:
    return tuple((ipaddress.ip_network(cidr), reason) for cidr, reason in rows)


# Explicit tables rather than ipaddress.is_private/is_global alone: those flags changed between
# Python patch releases, and the table gives each refusal a reason a user can act on.
_BLOCKED_V4 = _table(
    ("0.0.0.0/8", "a 'this network' address"),
    ("10.0.0.0/8", "a private address"),
    ("100.64.0.0/10", "a carrier-grade NAT address"),
    ("127.0.0.0/8", "a loopback address"),
    ("169.254.0.0/16", "a link-local address (cloud metadata lives there)"),
    ("172.16.0.0/12", "a private address"),
    ("192.0.0.0/24", "an IETF protocol assignment"),
    ("192.0.2.0/24", "a documentation address"),
    ("192.88.99.0/24", "a 6to4 relay address"),
    ("192.168.0.0/16", "a private address"),
    ("198.18.0.0/15", "a benchmarking address"),
    ("198.51.100.0/24", "a documentation address"),
    ("203.0.113.0/24", "a documentation address"),
    ("224.0.0.0/4", "a multicast address"),
    ("255.255.255.255/32", "the broadcast address"),
    ("240.0.0.0/4", "a reserved address"),
)
_BLOCKED_V6 = _table(
    ("::/128", "the unspecified address"),
    ("::1/128", "a loopback address"),
    ("64:ff9b:1::/48", "a local-use NAT64 address"),
    ("100::/64", "a discard-only address"),
    ("2001:db8::/32", "a documentation address"),
    ("fc00::/7", "a unique-local (private) address"),
    ("fe80::/10", "a link-local address"),
    ("fec0::/10", "a site-local address"),
    ("ff00::/8", "a multicast address"),
)
_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")
_COMPAT = ipaddress.IPv6Network("::/96")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_SIXTOFOUR = ipaddress.IPv6Network("2002::/16")  # 2002:AABB:CCDD::/48 carries IPv4 AA.BB.CC.DD
_TEREDO = ipaddress.IPv6Network("2001::/32")  # the client's IPv4 is the last 32 bits, inverted
#: Tunnel forms: real IPv6 destinations (a relay reaches the IPv4 inside), refused when that IPv4 is,
#: and otherwise judged as any IPv6 address.
_TUNNELS = ("6to4", "Teredo")


def parse_networks(cidrs: Iterable[str]) -> list[Network]:
    """Parse an operator allow-list such as ["127.0.0.0/8", "10.1.0.0/16"]; raises ValueError."""
    networks: list[Network] = []
    for cidr in cidrs:
        try:
            networks.append(ipaddress.ip_network(cidr.strip(), strict=False))
        except ValueError as exc:
            raise ValueError(f"invalid allow-list network {cidr!r}: {exc}") from exc
    return networks


def _allowed(address: Address, allow: Sequence[Network]) -> bool:
    # `in` across IP versions is simply False, so one list serves both families.
    return any(address in network for network in allow)


def _embedded_ipv4(address: ipaddress.IPv6Address) -> tuple[str, ipaddress.IPv4Address] | None:
    if address in _MAPPED:
        return "IPv4-mapped", ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address in _COMPAT and int(address) > 1:  # :: and ::1 are in the table
        return "IPv4-compatible", ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address in _NAT64:
        return "NAT64", ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address in _SIXTOFOUR:
        return "6to4", ipaddress.IPv4Address((int(address) >> 80) & 0xFFFFFFFF)
    if address in _TEREDO:
        return "Teredo", ipaddress.IPv4Address((int(address) & 0xFFFFFFFF) ^ 0xFFFFFFFF)
    return None


def _why_blocked(address: Address, allow: Sequence[Network]) -> str | None:
    embedded = _embedded_ipv4(address) if isinstance(address, ipaddress.IPv6Address) else None
    if embedded is not None:
        kind, ipv4 = embedded
        # A NAT64 or tunnel address is a real IPv6 destination (a gateway or relay reaches the IPv4
        # inside), so its own form may be allow-listed; mapped and compatible forms are only ever
        # judged as their IPv4.
        routed = kind == "NAT64" or kind in _TUNNELS
        if _allowed(ipv4, allow) or (routed and _allowed(address, allow)):
            return None
        inner = _why_blocked(ipv4, ())
        if inner is not None:
            return f"which is {kind} {ipv4}, {inner}"
        # No public DNS answer is a mapped address: refuse it rather than guess how the
        # socket layer will route it.
        if kind not in _TUNNELS:
            return None if kind == "NAT64" else f"an {kind} address (allow-list {ipv4} to use it)"
    if _allowed(address, allow):
        return None
    table = _BLOCKED_V4 if address.version == 4 else _BLOCKED_V6
    for network, reason in table:
        if address in network:
            return reason
    if not address.is_global:
        return "not a globally routable address"
    return None


def check_address(ip: Address | str, allow: Sequence[Network]) -> None:
    """Raise UnsafeTarget unless the address is public or inside an operator allow-list network."""
    address = ipaddress.ip_address(ip) if isinstance(ip, str) else ip
    reason = _why_blocked(address, allow)
    if reason is not None:
        raise UnsafeTarget(f"webhook url resolves to {address}, {reason}")


def check_url_syntax(url: str, require_https: bool) -> tuple[str, int]:
    """Cheap checks without DNS: http(s) scheme (https when required), a host, no credentials.

    Returns the host (lower-case, IPv6 without brackets) and the port.
    """
    if any(char.isspace() or ord(char) < 0x20 or char == "\\" for char in url):
        # Parsers disagree on these; refusing them avoids checking one host and calling another.
        raise UnsafeTarget("webhook url contains whitespace, control characters or a backslash")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UnsafeTarget(f"webhook url is not a valid url: {exc}") from exc
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise UnsafeTarget("webhook url must use http or https")
    if require_https and scheme != "https":
        raise UnsafeTarget("webhook url must use https")
    if "@" in parts.netloc:
        raise UnsafeTarget("webhook url must not carry credentials")
    if not parts.hostname:
        raise UnsafeTarget("webhook url has no host")
    if parts.hostname.replace(".", "").isdigit() and _literal(parts.hostname) is None:
        # "127.1" or "2130706433": socket maps these onto addresses, aiohttp refuses them.
        raise UnsafeTarget("webhook url host is a non-canonical IPv4 address")
    return parts.hostname, port or (443 if scheme == "https" else 80)


def _literal(host: str) -> Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _check_all(host: str, found: Iterable[str], allow: Sequence[Network]) -> list[str]:
    # Every answer must pass: a public address next to a private one is a rebinding signature.
    addresses = list(dict.fromkeys(found))
    if not addresses:
        raise OSError(f"webhook url host {host!r} has no addresses")
    for address in addresses:
        check_address(address, allow)
    return addresses


async def system_resolve(host: str, port: int, family: int = socket.AF_UNSPEC) -> list[str]:
    """Resolve through the event loop's getaddrinfo; the default resolver."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, family=family, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def _system_resolve_sync(host: str, port: int) -> list[str]:
    return [str(info[4][0]) for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)]


async def resolve_host(
    host: str, port: int, allow: Sequence[Network], resolver: Resolver | None = None
) -> list[str]:
    """Return the checked addresses of a host (a literal IP is checked as is).

    Raises UnsafeTarget if any address is refused, OSError if the name does not resolve.
    """
    literal = _literal(host)
    if literal is not None:
        check_address(literal, allow)
        return [str(literal)]
    found = await (resolver or system_resolve)(host, port)
    return _check_all(host, found, allow)


async def resolve_checked(
    url: str, allow: Sequence[Network], require_https: bool, resolver: Resolver | None = None
) -> tuple[str, int, list[str]]:
    """Validate the URL, resolve its host and check every address; returns host, port, addresses.

    Raises UnsafeTarget when refused and OSError when DNS fails (a retryable condition at send time).
    """
    host, port = check_url_syntax(url, require_https)
    return host, port, await resolve_host(host, port, allow, resolver)


def check_url(
    url: str, allow: Sequence[Network], require_https: bool, resolver: SyncResolver | None = None
) -> tuple[str, int, list[str]]:
    """Synchronous check for admission: like resolve_checked, but a name that does not resolve is refused.

    Raises only UnsafeTarget. The sender checks again at every attempt, because DNS can change.
    """
    host, port = check_url_syntax(url, require_https)
    literal = _literal(host)
    if literal is not None:
        check_address(literal, allow)
        return host, port, [str(literal)]
    try:
        found = (resolver or _system_resolve_sync)(host, port)
        return host, port, _check_all(host, found, allow)
    except OSError as exc:
        raise UnsafeTarget(f"webhook url host {host!r} does not resolve: {exc}") from exc
