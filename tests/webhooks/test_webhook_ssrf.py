"""SSRF guard: every non-public range is refused, names are judged by what they resolve to."""

from __future__ import annotations

import asyncio
import socket

import pytest

from taskq.errors import UnsafeTarget, ValidationFailed
from taskq.webhooks.ssrf import (
    Network,
    Resolver,
    check_address,
    check_url,
    check_url_syntax,
    parse_networks,
    resolve_checked,
)

NO_ALLOW: list[Network] = []


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("0.0.0.0", "'this network'"),
        ("0.1.2.3", "'this network'"),
        ("10.0.0.5", "private"),
        ("100.64.0.1", "carrier-grade NAT"),
        ("100.127.255.254", "carrier-grade NAT"),
        ("127.0.0.1", "loopback"),
        ("127.255.0.9", "loopback"),
        ("169.254.169.254", "link-local"),
        ("172.16.0.1", "private"),
        ("172.31.255.255", "private"),
        ("192.0.0.8", "IETF protocol"),
        ("192.0.2.1", "documentation"),
        ("192.168.1.1", "private"),
        ("198.18.0.1", "benchmarking"),
        ("198.19.255.1", "benchmarking"),
        ("198.51.100.7", "documentation"),
        ("203.0.113.9", "documentation"),
        ("224.0.0.1", "multicast"),
        ("239.255.255.250", "multicast"),
        ("240.0.0.1", "reserved"),
        ("255.255.255.255", "broadcast"),
        ("::", "unspecified"),
        ("::1", "loopback"),
        ("fe80::1", "link-local"),
        ("febf::1", "link-local"),
        ("fc00::1", "unique-local"),
        ("fd12:3456::1", "unique-local"),
        ("ff02::1", "multicast"),
        ("2001:db8::1", "documentation"),
        ("::ffff:127.0.0.1", "IPv4-mapped 127.0.0.1, a loopback"),
        ("::ffff:169.254.169.254", "IPv4-mapped 169.254.169.254, a link-local"),
        ("::ffff:10.0.0.1", "private"),
        ("::ffff:8.8.8.8", "IPv4-mapped address"),
        ("::127.0.0.1", "IPv4-compatible 127.0.0.1"),
        ("64:ff9b::10.0.0.1", "NAT64 10.0.0.1, a private"),
        ("64:ff9b::127.0.0.1", "NAT64 127.0.0.1, a loopback"),
        ("64:ff9b:1::1", "local-use NAT64"),
        ("2002:7f00:1::", "6to4 127.0.0.1, a loopback"),
        ("2002:a9fe:a9fe::1", "6to4 169.254.169.254, a link-local"),
        ("2002:c0a8:101:1::5", "6to4 192.168.1.1, a private"),
        # Teredo: 2001:0:<server IPv4>:<flags>:<port>:<client IPv4 XOR ffff:ffff>
        ("2001:0:4136:e378:8000:63bf:80ff:fffe", "Teredo 127.0.0.1, a loopback"),
        ("2001:0:4136:e378:8000:63bf:f5ff:fffe", "Teredo 10.0.0.1, a private"),
        ("2001:0:4136:e378:8000:63bf:f7f7:f7f7", "not a globally routable"),  # Teredo, client 8.8.8.8
    ],
)
def test_non_public_addresses_are_refused_with_a_reason(address: str, reason: str) -> None:
    with pytest.raises(UnsafeTarget, match="resolves to") as refused:
        check_address(address, NO_ALLOW)
    assert reason in str(refused.value)


@pytest.mark.parametrize(
    "address",
    [
        "8.8.8.8", "1.1.1.1", "93.184.215.14", "2606:4700:4700::1111", "64:ff9b::8.8.8.8",
        "2002:808:808::1",  # 6to4 of 8.8.8.8
    ],
)  # fmt: skip
def test_public_addresses_pass(address: str) -> None:
    check_address(address, NO_ALLOW)


def test_the_message_names_the_address_and_why() -> None:
    with pytest.raises(UnsafeTarget) as refused:
        check_address("10.0.0.5", NO_ALLOW)
    assert str(refused.value) == "webhook url resolves to 10.0.0.5, a private address"


def test_unsafe_target_is_a_validation_failure_for_the_intake() -> None:
    assert issubclass(UnsafeTarget, ValidationFailed)


def test_the_operator_allow_list_overrides_the_block_list() -> None:
    allow = parse_networks(["127.0.0.0/8", "10.1.0.0/16", "fd00::/8"])
    check_address("127.0.0.1", allow)
    check_address("10.1.2.3", allow)
    check_address("fd00::5", allow)
    with pytest.raises(UnsafeTarget):
        check_address("10.2.0.1", allow)


def test_a_mapped_address_is_allowed_only_through_its_ipv4() -> None:
    check_address("::ffff:127.0.0.1", parse_networks(["127.0.0.0/8"]))
    check_address("::ffff:8.8.8.8", parse_networks(["8.8.8.0/24"]))
    with pytest.raises(UnsafeTarget):
        check_address("::ffff:127.0.0.1", parse_networks(["::ffff:0:0/96"]))


def test_a_url_with_a_6to4_or_teredo_literal_around_loopback_is_refused() -> None:
    for host in ("2002:7f00:1::", "2001:0:4136:e378:8000:63bf:80ff:fffe"):
        with pytest.raises(UnsafeTarget, match=r"127\.0\.0\.1, a loopback"):
            check_url(f"http://[{host}]/", NO_ALLOW, require_https=False)
    check_url("http://[2002:7f00:1::]/", parse_networks(["127.0.0.0/8"]), require_https=False)


def test_an_invalid_allow_list_entry_is_reported() -> None:
    with pytest.raises(ValueError, match="invalid allow-list network 'not-a-net'"):
        parse_networks(["not-a-net"])


@pytest.mark.parametrize(
    ("url", "require_https", "message"),
    [
        ("ftp://example.com/", False, "must use http or https"),
        ("file:///etc/passwd", False, "must use http or https"),
        ("http://example.com/hook", True, "must use https"),
        ("https://user:pw@example.com/", True, "credentials"),
        ("https://user@example.com/", True, "credentials"),
        ("https:///path-only", True, "no host"),
        ("https://example.com:99999/", True, "not a valid url"),
        ("https://exa mple.com/", True, "whitespace"),
        ("https://example.com\\@10.0.0.1/", True, "backslash"),
        ("https://example.com/\r\nX-Injected: 1", True, "control characters"),
        ("http://127.1/", False, "non-canonical IPv4"),
        ("http://2130706433/", False, "non-canonical IPv4"),
        ("http://0127.0.0.1/", False, "non-canonical IPv4"),
    ],
)
def test_url_syntax_is_refused_before_any_lookup(url: str, require_https: bool, message: str) -> None:
    with pytest.raises(UnsafeTarget, match=message):
        check_url_syntax(url, require_https)


def test_url_syntax_returns_host_and_default_or_explicit_port() -> None:
    assert check_url_syntax("https://Hooks.Example.com/x", True) == ("hooks.example.com", 443)
    assert check_url_syntax("http://example.com/x", False) == ("example.com", 80)
    assert check_url_syntax("https://[2606:4700::1]:8443/", True) == ("2606:4700::1", 8443)


def _lookup(answers: dict[str, list[str]], host: str) -> list[str]:
    if host not in answers:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    return answers[host]


def _dns(answers: dict[str, list[str]]) -> Resolver:
    async def resolve(host: str, port: int) -> list[str]:
        return _lookup(answers, host)

    return resolve


DNS = {
    "internal.example": ["10.0.0.5"],
    "metadata.example": ["169.254.169.254"],
    "mixed.example": ["93.184.215.14", "127.0.0.1"],
    "public.example": ["93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c", "93.184.215.14"],
    "loop.example": ["127.0.0.1"],
}


@pytest.mark.parametrize("host", ["internal.example", "metadata.example", "mixed.example"])
def test_names_resolving_to_a_private_address_are_refused(host: str) -> None:
    with pytest.raises(UnsafeTarget, match="resolves to"):
        asyncio.run(resolve_checked(f"https://{host}/hook", NO_ALLOW, True, _dns(DNS)))


def test_a_public_name_returns_every_checked_address_once() -> None:
    host, port, addresses = asyncio.run(
        resolve_checked("https://public.example/h", NO_ALLOW, True, _dns(DNS))
    )
    assert (host, port) == ("public.example", 443)
    assert addresses == ["93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c"]


def test_an_allow_listed_loopback_name_is_accepted() -> None:
    allow = parse_networks(["127.0.0.0/8"])
    result = asyncio.run(resolve_checked("http://loop.example:8080/", allow, False, _dns(DNS)))
    assert result == ("loop.example", 8080, ["127.0.0.1"])


def test_literal_addresses_are_checked_without_dns() -> None:
    with pytest.raises(UnsafeTarget, match=r"IPv4-mapped 127\.0\.0\.1"):
        asyncio.run(resolve_checked("http://[::ffff:127.0.0.1]/", NO_ALLOW, False, _dns({})))
    with pytest.raises(UnsafeTarget, match="loopback"):
        check_url("http://[::1]:8080/", NO_ALLOW, False)


def test_dns_failure_at_send_time_is_an_os_error_to_retry() -> None:
    with pytest.raises(OSError):
        asyncio.run(resolve_checked("https://gone.example/", NO_ALLOW, True, _dns({})))


def test_localhost_is_refused_through_the_system_resolver() -> None:
    with pytest.raises(UnsafeTarget, match="loopback"):
        check_url("http://localhost:8080/hook", NO_ALLOW, False)
    with pytest.raises(UnsafeTarget, match="loopback"):
        asyncio.run(resolve_checked("http://localhost:8080/hook", NO_ALLOW, False))


def test_admission_check_uses_the_same_rules_and_refuses_unresolvable_names() -> None:
    def resolve(host: str, port: int) -> list[str]:
        return _lookup(DNS, host)

    assert check_url("https://public.example/", NO_ALLOW, True, resolve)[2][0] == "93.184.215.14"
    with pytest.raises(UnsafeTarget, match="a private address"):
        check_url("https://internal.example/", NO_ALLOW, True, resolve)
    with pytest.raises(UnsafeTarget, match="does not resolve"):
        check_url("https://gone.example/", NO_ALLOW, True, resolve)
    with pytest.raises(UnsafeTarget, match="must use https"):
        check_url("http://public.example/", NO_ALLOW, True, resolve)
