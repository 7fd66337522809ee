"""Render the simulator's model as the Hetzner Cloud API's documented JSON shapes.

The ``hcloud`` SDK is strict about shapes (it indexes ``public_net["ipv4"]["id"]``, the
firewall rule keys, ``root_password`` ...), so every object carries all its documented
fields, with ``null`` or empty values where the simulator has nothing to say. Servers
report ``location`` (the API removed ``datacenter`` in July 2026).
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from smart_sim.hetzner.catalog import (
    LOCATIONS,
    VAT_RATE,
    Deprecation,
    Image,
    Location,
    ServerType,
)
from smart_sim.hetzner.state import Action, Firewall, HetznerState, Server, SSHKey
from smart_sim.ratelimit import SimClock

__all__ = [
    "action_json",
    "firewall_json",
    "image_json",
    "location_json",
    "pricing_json",
    "server_json",
    "server_type_json",
    "ssh_key_json",
]

JSON = dict[str, object]


def time_json(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds")


def _money(net: Decimal) -> JSON:
    gross = net * (1 + VAT_RATE / 100)
    return {"net": f"{net:.10f}", "gross": f"{gross:.16f}"}


def location_json(location: Location) -> JSON:
    """A location object."""
    return {
        "id": location.id,
        "name": location.name,
        "description": location.description,
        "country": location.country,
        "city": location.city,
        "latitude": location.latitude,
        "longitude": location.longitude,
        "network_zone": location.network_zone,
    }


def _prices(server_type: ServerType) -> list[JSON]:
    return [
        {
            "location": price.location,
            "price_hourly": _money(price.hourly_net),
            "price_monthly": _money(price.monthly_net),
            "included_traffic": price.included_traffic,
            "price_per_tb_traffic": _money(price.traffic_per_tb_net),
        }
        for price in server_type.prices
    ]


def _deprecation(deprecation: Deprecation | None) -> JSON | None:
    if deprecation is None:
        return None
    return {
        "announced": time_json(deprecation.announced),
        "unavailable_after": time_json(deprecation.unavailable_after),
    }


def server_type_json(state: HetznerState, server_type: ServerType) -> JSON:
    """A server type object with its per-location prices, deprecations and stock.

    The top-level ``deprecated``/``deprecation`` describe a type deprecated in every
    location; since 2025-09-24 the per-location ``locations[].deprecation`` is the one to
    read (hcloud-python's ``ServerType.deprecation`` docstring).
    """
    by_name = {loc.name: loc for loc in LOCATIONS}
    everywhere = server_type.deprecated_everywhere()
    now = state.clock.wall()
    return {
        "id": server_type.id,
        "name": server_type.name,
        "description": server_type.name.upper(),
        "category": server_type.category,
        "cores": server_type.cores,
        "memory": server_type.memory,
        "disk": server_type.disk,
        "prices": _prices(server_type),
        "storage_type": server_type.storage_type,
        "cpu_type": server_type.cpu_type,
        "architecture": server_type.architecture,
        "deprecated": everywhere is not None,
        "deprecation": _deprecation(everywhere),
        "locations": [
            {
                "id": by_name[name].id,
                "name": name,
                "deprecation": _deprecation(server_type.deprecation_in(name)),
                "available": server_type.orderable_in(name, now)
                and state.available(server_type, name),
                "recommended": server_type.deprecation_in(name) is None
                and state.available(server_type, name),
            }
            for name in server_type.location_names
        ],
    }


def image_json(image: Image) -> JSON:
    """A system image object."""
    return {
        "id": image.id,
        "type": "system",
        "status": "available",
        "name": image.name,
        "description": image.description,
        "image_size": None,
        "disk_size": image.disk_size,
        "created": time_json(image.created),
        "created_from": None,
        "bound_to": None,
        "os_flavor": image.os_flavor,
        "os_version": image.os_version,
        "architecture": image.architecture,
        "rapid_deploy": True,
        "protection": {"delete": False},
        "deprecated": None,
        "deprecation": None,
        "deleted": None,
        "labels": {},
    }


def _reverse_dns(ipv4: str) -> str:
    return "static." + ".".join(reversed(ipv4.split("."))) + ".clients.your-server.de"


def server_json(state: HetznerState, server: Server) -> JSON:
    """A server object, with its firewalls, network and catalog objects in full."""
    ipv4: JSON | None = (
        {
            "id": server.ipv4_id,
            "ip": server.ipv4,
            "blocked": False,
            "dns_ptr": _reverse_dns(server.ipv4),
        }
        if server.ipv4 is not None
        else None
    )
    ipv6: JSON | None = (
        {"id": server.ipv6_id, "ip": server.ipv6_network, "blocked": False, "dns_ptr": []}
        if server.ipv6_network is not None
        else None
    )
    price = server.server_type.price_in(server.location.name)
    return {
        "id": server.id,
        "name": server.name,
        "status": server.status,
        "created": time_json(server.created),
        "public_net": {
            "ipv4": ipv4,
            "ipv6": ipv6,
            "floating_ips": [],
            "firewalls": [{"id": f.id, "status": "applied"} for f in state.firewalls_of(server)],
        },
        "private_net": [],
        "server_type": server_type_json(state, server.server_type),
        "location": location_json(server.location),
        "image": image_json(server.image),
        "iso": None,
        "rescue_enabled": False,
        "locked": False,
        "backup_window": None,
        "outgoing_traffic": 0,
        "ingoing_traffic": 0,
        "included_traffic": price.included_traffic if price else 0,
        "protection": {"delete": False, "rebuild": False},
        "labels": dict(server.labels),
        "volumes": [],
        "load_balancers": [],
        "primary_disk_size": server.server_type.disk,
        "placement_group": None,
    }


def action_json(clock: SimClock, action: Action) -> JSON:
    """An action object as seen at the current simulated time."""
    now = clock.now()
    status = action.status(now)
    return {
        "id": action.id,
        "command": action.command,
        "status": status,
        "progress": action.progress(now),
        "started": time_json(clock.wall(action.started)),
        "finished": None if status == "running" else time_json(clock.wall(action.finishes)),
        "resources": [{"id": i, "type": t} for t, i in action.resources],
        "error": (
            {"code": action.error[0], "message": action.error[1]}
            if status == "error" and action.error is not None
            else None
        ),
    }


def ssh_key_json(key: SSHKey) -> JSON:
    """An SSH key object."""
    return {
        "id": key.id,
        "name": key.name,
        "fingerprint": key.fingerprint,
        "public_key": key.public_key,
        "labels": dict(key.labels),
        "created": time_json(key.created),
    }


def firewall_json(state: HetznerState, firewall: Firewall) -> JSON:
    """A firewall object with its rules and the resources it applies to."""
    applied_to: list[JSON] = [
        {"type": "server", "server": {"id": server_id}} for server_id in firewall.server_ids
    ]
    applied_to += [
        {
            "type": "label_selector",
            "label_selector": {"selector": selector},
            "applied_to_resources": [
                {"type": "server", "server": {"id": s.id}}
                for s in state.servers_behind(firewall, selector)
            ],
        }
        for selector in firewall.selectors
    ]
    return {
        "id": firewall.id,
        "name": firewall.name,
        "labels": dict(firewall.labels),
        "created": time_json(firewall.created),
        "rules": [
            {
                "direction": rule.direction,
                "protocol": rule.protocol,
                "port": rule.port,
                "source_ips": list(rule.source_ips),
                "destination_ips": list(rule.destination_ips),
                "description": rule.description,
            }
            for rule in firewall.rules
        ],
        "applied_to": applied_to,
    }


def pricing_json(state: HetznerState) -> JSON:
    """The ``pricing`` object: currency, VAT and the prices of everything on sale."""
    location_names = [loc.name for loc in LOCATIONS]
    return {
        "currency": "EUR",
        "vat_rate": f"{VAT_RATE:.2f}",
        "image": {"price_per_gb_month": _money(Decimal("0.0110"))},
        "floating_ip": {"price_monthly": _money(Decimal("3.0000"))},
        "floating_ips": [
            {
                "type": "ipv4",
                "prices": [
                    {"location": name, "price_monthly": _money(Decimal("3.0000"))}
                    for name in location_names
                ],
            }
        ],
        "primary_ips": [
            {
                "type": ip_type,
                "prices": [
                    {
                        "location": name,
                        "price_hourly": _money(hourly),
                        "price_monthly": _money(monthly),
                    }
                    for name in location_names
                ],
            }
            for ip_type, hourly, monthly in (
                ("ipv4", Decimal("0.0008"), Decimal("0.5000")),
                ("ipv6", Decimal("0.0000"), Decimal("0.0000")),
            )
        ],
        "server_backup": {"percentage": "20.00"},
        "server_types": [
            {"id": t.id, "name": t.name, "prices": _prices(t)} for t in state.listed_server_types()
        ],
        "load_balancer_types": [],
        "volume": {"price_per_gb_month": _money(Decimal("0.0440"))},
    }
