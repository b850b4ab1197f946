"""Where the sensor may send packets. Every transport asks before it connects or sends.

The default allows only loopback (127.0.0.0/8 and ::1): tests, the lab and the demo can never
reach another address, whatever a torrent, a tracker or a DHT node says. A deployment widens it
explicitly (`--allow-network`), and every refusal is counted so that it shows in the sweep's
summary instead of disappearing.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from peerwatch.errors import PeerwatchError

LOOPBACK = ("127.0.0.0/8", "::1/128")


class EgressDeniedError(PeerwatchError):
    """A destination outside the allowed networks."""


@dataclass
class EgressPolicy:
    networks: tuple[str, ...] = LOOPBACK
    denied: int = 0
    _nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = field(
        default_factory=list, init=False, repr=False
    )

    def __post_init__(self) -> None:
        self._nets = [ipaddress.ip_network(n, strict=False) for n in self.networks]

    def allows(self, ip: str) -> bool:
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return False  # a host name: resolving it would itself be traffic
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        return any(addr.version == n.version and addr in n for n in self._nets)

    def check(self, ip: str) -> None:
        if not self.allows(ip):
            self.denied += 1
            raise EgressDeniedError(
                f"{ip} is outside the allowed networks ({', '.join(self.networks)})"
            )
