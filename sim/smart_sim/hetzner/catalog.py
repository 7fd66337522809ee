"""The Hetzner Cloud catalogue: locations, server types (with their deprecations), images, prices.

The server types and prices are those on sale in late 2026, each figure with its public
source beside it (EUR, net of VAT, per month; the hourly rate is derived). A type is
deprecated per location, as the API has shown it since 2025-09-24 (``locations[].
deprecation``); past ``unavailable_after`` it can no longer be ordered there. Figures the
sources do not give (traffic, prices outside the EU for the newest types) are marked as
the simulator's own. This is a model to compute costs against, not a price list to bill
from, and it must not grow types the sources do not show.
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
    "Deprecation",
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
class Deprecation:
    """The API's ``DeprecationInfo``: announced on one date, not orderable after another."""

    announced: datetime
    unavailable_after: datetime


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
    deprecations: tuple[tuple[str, Deprecation], ...] = ()
    """(location name, deprecation) for the locations where the type is deprecated."""

    @property
    def location_names(self) -> tuple[str, ...]:
        """Names of the locations where this type is (or was) offered."""
        return tuple(p.location for p in self.prices)

    def price_in(self, location: str) -> Price | None:
        """The price in a location, None where the type is not offered."""
        return next((p for p in self.prices if p.location == location), None)

    def deprecation_in(self, location: str) -> Deprecation | None:
        """The type's deprecation in a location, None where it is not deprecated."""
        return next((d for name, d in self.deprecations if name == location), None)

    def deprecated_everywhere(self) -> Deprecation | None:
        """The deprecation shared by every location (the top-level ``deprecation``)."""
        found = [self.deprecation_in(name) for name in self.location_names]
        if not found or any(d is None for d in found):
            return None
        return max((d for d in found if d is not None), key=lambda d: d.unavailable_after)

    def orderable_in(self, location: str, at: datetime) -> bool:
        """Whether the type can be ordered in a location at a moment (ignoring stock)."""
        if self.price_in(location) is None:
            return False
        deprecation = self.deprecation_in(location)
        return deprecation is None or at < deprecation.unavailable_after


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
_US = ("ash", "hil")
_EU_TRAFFIC = Decimal("1.00")
_US_TRAFFIC = Decimal("1.00")
_SIN_TRAFFIC = Decimal("7.40")


def _eu(monthly: str) -> tuple[Price, ...]:
    return tuple(Price(name, Decimal(monthly), 20 * TB, _EU_TRAFFIC) for name in _EU)


def _eu_sin(eu: str, sin: str) -> tuple[Price, ...]:
    return (*_eu(eu), Price("sin", Decimal(sin), int(0.5 * TB), _SIN_TRAFFIC))


def _everywhere(eu: str, us: str, sin: str, us_tb: int, sin_tb: float) -> tuple[Price, ...]:
    return (
        *_eu(eu),
        Price("ash", Decimal(us), us_tb * TB, _US_TRAFFIC),
        Price("hil", Decimal(us), us_tb * TB, _US_TRAFFIC),
        Price("sin", Decimal(sin), int(sin_tb * TB), _SIN_TRAFFIC),
    )


# Hetzner deprecated the cx_2 and cpx_1 families on 2025-10-16
# (https://docs.hetzner.cloud/changelog#2025-10-16-server-types-deprecated, cited by
# apricote/hcloud-upload-image#129; hetznercloud/cli#1211: "The cpx_1 and cx_2 Server
# Types have been deprecated"). terraform-provider-hcloud then warned: 'Server Type "cx42"
# is deprecated in all locations and will no longer be available for order as of
# 2025-12-31' (hcloud-talos/terraform-hcloud-talos#316). CPX11 is still sold in the US
# datacentres only in September 2026 (robhunter/agentdeals#1323), so the cpx_1 types are
# deprecated in the EU and Singapore and not in Ashburn or Hillsboro.
_OCT_2025 = Deprecation(
    announced=datetime(2025, 10, 16, tzinfo=UTC),
    unavailable_after=datetime(2025, 12, 31, tzinfo=UTC),
)
_EVERYWHERE_GONE = tuple((name, _OCT_2025) for name in (*_EU, *_US, "sin"))
_GONE_OUTSIDE_US = tuple((name, _OCT_2025) for name in (*_EU, "sin"))

# Prices of the types on sale (net EUR per month, from 15 June 2026, when Hetzner renamed
# the line-up and repriced new orders): CX23 5.49, CX33 8.49, CX43 15.99, CX53 29.49
# (CanineHQ/canine#652, "post-June 2026 EUR pricing"); CAX41 40.99, CPX22 19.49, CCX13
# 42.99 (robhunter/agentdeals#1324, from docs.hetzner.com .../price-adjustment/). The
# others are hetzner.com's September 2026 prices, which include the 0.50 of a primary IPv4
# (CX23 shows 5.99 there against 5.49 above; robhunter/agentdeals#1286), less that 0.50:
# CAX11 6.49, CAX21 10.99, CAX31 21.49, CPX12 11.99 (Singapore 15.99), CPX22 in Singapore
# 26.99. Sizes: cost-optimized 2/4/8/16 vCPU with 4/8/16/32 GB and 40/80/160/320 GB
# (cnap.tech's Hetzner provider page; agentdeals#1286); CPX12 1 vCPU, 2 GB, 40 GB and CPX22
# 2 vCPU, 4 GB, 80 GB (benchmarks gist by derhuerst, 2026); CCX13 2 dedicated vCPU, 8 GB.
# The deprecated types keep the prices existing servers pay (a rescale would reprice them).
SERVER_TYPES: tuple[ServerType, ...] = (
    ServerType(22, "cpx11", "regular_purpose", 2, 2.0, 40, "shared", "x86", "local",
               _everywhere("4.35", "4.99", "6.49", 1, 0.5), _GONE_OUTSIDE_US),
    ServerType(23, "cpx21", "regular_purpose", 3, 4.0, 80, "shared", "x86", "local",
               _everywhere("7.55", "9.49", "11.99", 2, 1), _GONE_OUTSIDE_US),
    ServerType(24, "cpx31", "regular_purpose", 4, 8.0, 160, "shared", "x86", "local",
               _everywhere("13.10", "16.49", "20.99", 3, 2), _GONE_OUTSIDE_US),
    ServerType(45, "cax11", "cost_optimized", 2, 4.0, 40, "shared", "arm", "local",
               _eu("5.99")),
    ServerType(93, "cax21", "cost_optimized", 4, 8.0, 80, "shared", "arm", "local",
               _eu("10.49")),
    ServerType(94, "cax31", "cost_optimized", 8, 16.0, 160, "shared", "arm", "local",
               _eu("20.99")),
    ServerType(95, "cax41", "cost_optimized", 16, 32.0, 320, "shared", "arm", "local",
               _eu("40.99")),
    ServerType(96, "ccx13", "general_purpose", 2, 8.0, 80, "dedicated", "x86", "local",
               _eu("42.99")),
    ServerType(104, "cx22", "cost_optimized", 2, 4.0, 40, "shared", "x86", "local",
               _eu("3.79"), _EVERYWHERE_GONE),
    ServerType(105, "cx32", "cost_optimized", 4, 8.0, 80, "shared", "x86", "local",
               _eu("6.80"), _EVERYWHERE_GONE),
    ServerType(106, "cx42", "cost_optimized", 8, 16.0, 160, "shared", "x86", "local",
               _eu("16.40"), _EVERYWHERE_GONE),
    ServerType(114, "cx23", "cost_optimized", 2, 4.0, 40, "shared", "x86", "local",
               _eu("5.49")),
    ServerType(115, "cx33", "cost_optimized", 4, 8.0, 80, "shared", "x86", "local",
               _eu("8.49")),
    ServerType(116, "cx43", "cost_optimized", 8, 16.0, 160, "shared", "x86", "local",
               _eu("15.99")),
    ServerType(117, "cx53", "cost_optimized", 16, 32.0, 320, "shared", "x86", "local",
               _eu("29.49")),
    ServerType(108, "cpx12", "regular_purpose", 1, 2.0, 40, "shared", "x86", "local",
               _eu_sin("11.49", "15.49")),
    ServerType(109, "cpx22", "regular_purpose", 2, 4.0, 80, "shared", "x86", "local",
               _eu_sin("19.49", "26.49")),
)  # fmt: skip
"""IDs and traffic allowances of the newest types are the simulator's own."""

IMAGES: tuple[Image, ...] = (
    Image(114690387, "debian-12", "Debian 12", "debian", "12", "x86"),
    Image(114690389, "debian-12", "Debian 12", "debian", "12", "arm"),
    Image(202755045, "debian-13", "Debian 13", "debian", "13", "x86"),
    Image(202755047, "debian-13", "Debian 13", "debian", "13", "arm"),
    Image(161547269, "ubuntu-24.04", "Ubuntu 24.04", "ubuntu", "24.04", "x86"),
    Image(161547270, "ubuntu-24.04", "Ubuntu 24.04", "ubuntu", "24.04", "arm"),
)
