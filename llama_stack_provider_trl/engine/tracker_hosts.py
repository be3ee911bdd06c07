"""Which hosts a request's experiment tracker may send a job's runs to: the operator's ``tracker_hosts``.

A request may name an MLflow tracking server (``tracking_uri``) and ask W&B to run online; both make the job's
process open connections the server's operator did not choose. So a host must be on the operator's list, by name
(``mlflow.example.com``), by a subdomain pattern (``*.example.com``) or as an address or network (``10.0.0.0/8``),
and every address its name resolves to must be public, or lie in a network the list names: loopback, private,
link-local (cloud metadata endpoints such as 169.254.169.254), multicast and reserved addresses are refused
otherwise. The list is empty by default: requests may name no tracking server, and W&B runs offline only.

The name is resolved when the request is admitted; a name whose addresses change afterwards (DNS the operator does
not control) is not checked again, which is why a listed name should be one the operator's own DNS answers for.
"""

import ipaddress
import socket
from collections.abc import Sequence
from http import HTTPStatus
from urllib.parse import urlsplit

from llama_stack_provider_trl.engine.errors import RequestError

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def check_tracker_url(url: str, field: str, allowed: Sequence[str]) -> None:
    """RequestError naming ``field`` unless ``url`` is an http(s) URL whose host the operator allows."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError as exc:
        raise RequestError(field, f"{url!r} is not a URL ({exc})") from exc
    if parts.scheme not in ("http", "https") or not host:
        raise RequestError(field, f"{url!r} is not an http(s) URL")
    if parts.username or parts.password:
        raise RequestError(field, "carries a user name or password; give the URL without them")
    names, networks = _split(allowed)
    literal = _address(host)
    if not (_name_listed(host, names) or (literal is not None and _in(literal, networks))):
        listed = ", ".join(allowed) if allowed else "none: the operator allows no tracking server a request names"
        raise RequestError(
            field, f"host {host} is not among the server's tracker_hosts ({listed})", HTTPStatus.FORBIDDEN
        )
    for address in [literal] if literal is not None else _resolve(host, port, field):
        if not address.is_global and not _in(address, networks):
            raise RequestError(
                field,
                f"host {host} is at a private, loopback or link-local address, which a request may reach only when "
                "the server's tracker_hosts lists its network",
                HTTPStatus.FORBIDDEN,
            )


def _split(allowed: Sequence[str]) -> tuple[list[str], list[IpNetwork]]:
    names, networks = [], []
    for entry in allowed:
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            names.append(entry.lower().rstrip("."))
    return names, networks


def _name_listed(host: str, names: Sequence[str]) -> bool:
    host = host.lower().rstrip(".")
    return any(host == name or (name.startswith("*.") and host.endswith(name[1:])) for name in names)


def _address(host: str) -> IpAddress | None:
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])  # an IPv6 scope (fe80::1%eth0) dropped
    except ValueError:
        return None
    mapped = getattr(address, "ipv4_mapped", None)  # ::ffff:169.254.169.254 is 169.254.169.254
    return mapped if mapped is not None else address


def _in(address: IpAddress, networks: Sequence[IpNetwork]) -> bool:
    return any(address in network for network in networks)


def _resolve(host: str, port: int | None, field: str) -> list[IpAddress]:
    try:
        infos = socket.getaddrinfo(host, port or 443, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError) as exc:
        raise RequestError(field, f"host {host} cannot be resolved from the server") from exc
    addresses = [address for info in infos if (address := _address(str(info[4][0]))) is not None]
    if not addresses:
        raise RequestError(field, f"host {host} resolves to no IP address on the server")
    return addresses
