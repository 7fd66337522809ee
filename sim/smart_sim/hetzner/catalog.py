"""The fixed Hetzner Cloud catalog: locations, server types, images and their prices.

The figures are real-looking (EUR, net of VAT, per month with the hourly rate below it;
traffic included per location) so that cost reports computed against the simulator look
like the ones computed against the real API. They are not a price list to bill from.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal

__all__ = [
    "IMAGES",
    "LOCATIONS",
    "SERVER_TYPES",
    "TB",
    "VAT_RATE",
    "Image",
    "Location",
    "Price",
    "ServerType",
]

TB = 1024**4
"""Bytes in a terabyte as Hetzner counts included traffic."""

VAT_RATE = Decimal("19.00")
"""German VAT in percent; gross prices are net prices with it."""

_CATALOG_DATE = datetime(2025, 1, 15, 9, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Location:
    """A Hetzner location (the datacenter concept is gone from the API)."""

    id: int
    name: str
    description: str
    country: str
    city: str
    latitude: float
    longitude: float
    network_zone: str


@dataclass(frozen=True)
class Price:
    """The price of a server type in one location."""

    location: str
    monthly_net: Decimal
    included_traffic: int
    traffic_per_tb_net: Decimal

    @property
    def hourly_net(self) -> Decimal:
        """Hourly rate: Hetzner caps the hourly bill at the monthly price (~640 hours)."""
        return (self.monthly_net / 640).quantize(Decimal("0.0001"), rounding=ROUND_HALF_UP)


@dataclass(frozen=True)
class ServerType:
    """A server type with its prices per location (the locations where it is offered)."""

    id: int
    name: str
    category: str
    cores: int
    memory: float
    disk: int
    cpu_type: str
    architecture: str
    storage_type: str
    prices: tuple[Price, ...]

    @property
    def location_names(self) -> tuple[str, ...]:
        """Names of the locations where this type can be created."""
        return tuple(p.location for p in self.prices)

    def price_in(self, location: str) -> Price | None:
        """The price in a location, None where the type is not offered."""
        return next((p for p in self.prices if p.location == location), None)


@dataclass(frozen=True)
class Image:
    """A system image for one architecture."""

    id: int
    name: str
    description: str
    os_flavor: str
    os_version: str
    architecture: str
    disk_size: int = 5
    created: datetime = _CATALOG_DATE


LOCATIONS: tuple[Location, ...] = (
    Location(
        1, "fsn1", "Falkenstein DC Park 1", "DE", "Falkenstein", 50.47612, 12.370071, "eu-central"
    ),
    Location(
        2, "nbg1", "Nuremberg DC Park 1", "DE", "Nuremberg", 49.452102, 11.076665, "eu-central"
    ),
    Location(3, "hel1", "Helsinki DC Park 1", "FI", "Helsinki", 60.169855, 24.938379, "eu-central"),
    Location(4, "ash", "Ashburn, VA", "US", "Ashburn, VA", 39.045821, -77.487073, "us-east"),
    Location(5, "hil", "Hillsboro, OR", "US", "Hillsboro, OR", 45.54222, -122.951924, "us-west"),
    Location(6, "sin", "Singapore", "SG", "Singapore", 1.283333, 103.833333, "ap-southeast"),
)

_EU = ("fsn1", "nbg1", "hel1")
_EU_TRAFFIC = Decimal("1.00")
_US_TRAFFIC = Decimal("1.00")
_SIN_TRAFFIC = Decimal("7.40")


def _eu(monthly: str) -> tuple[Price, ...]:
    return tuple(Price(name, Decimal(monthly), 20 * TB, _EU_TRAFFIC) for name in _EU)


def _everywhere(eu: str, us: str, sin: str, us_tb: int, sin_tb: float) -> tuple[Price, ...]:
    return (
        *_eu(eu),
        Price("ash", Decimal(us), us_tb * TB, _US_TRAFFIC),
        Price("hil", Decimal(us), us_tb * TB, _US_TRAFFIC),
        Price("sin", Decimal(sin), int(sin_tb * TB), _SIN_TRAFFIC),
    )


SERVER_TYPES: tuple[ServerType, ...] = (
    ServerType(22, "cpx11", "regular_purpose", 2, 2.0, 40, "shared", "x86", "local",
               _everywhere("4.35", "4.99", "6.49", 1, 0.5)),
    ServerType(23, "cpx21", "regular_purpose", 3, 4.0, 80, "shared", "x86", "local",
               _everywhere("7.55", "9.49", "11.99", 2, 1)),
    ServerType(24, "cpx31", "regular_purpose", 4, 8.0, 160, "shared", "x86", "local",
               _everywhere("13.10", "16.49", "20.99", 3, 2)),
    ServerType(45, "cax11", "cost_optimized", 2, 4.0, 40, "shared", "arm", "local",
               _eu("3.79")),
    ServerType(104, "cx22", "cost_optimized", 2, 4.0, 40, "shared", "x86", "local",
               _eu("3.79")),
    ServerType(105, "cx32", "cost_optimized", 4, 8.0, 80, "shared", "x86", "local",
               _eu("6.80")),
    ServerType(106, "cx42", "cost_optimized", 8, 16.0, 160, "shared", "x86", "local",
               _eu("16.40")),
)  # fmt: skip

IMAGES: tuple[Image, ...] = (
    Image(114690387, "debian-12", "Debian 12", "debian", "12", "x86"),
    Image(114690389, "debian-12", "Debian 12", "debian", "12", "arm"),
    Image(202755045, "debian-13", "Debian 13", "debian", "13", "x86"),
    Image(202755047, "debian-13", "Debian 13", "debian", "13", "arm"),
    Image(161547269, "ubuntu-24.04", "Ubuntu 24.04", "ubuntu", "24.04", "x86"),
    Image(161547270, "ubuntu-24.04", "Ubuntu 24.04", "ubuntu", "24.04", "arm"),
)
