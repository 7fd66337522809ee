"""DNS-01 challenge records through the Cloudflare port.

``ZoneChallenges`` writes the TXT records an ACME CA asks for into the Domain's zone,
marked as the Domain's own (the comment every Smart Server record starts with), so a
deletion of the Domain removes any that a crash left behind; the DNS step leaves them
alone (``certificates.is_challenge_record``). Stale challenge records of the Domain are
removed before new ones are written: a CA reads every TXT value at the name, and an old
one would only slow its answer.
"""

from __future__ import annotations

from dataclasses import dataclass

from smart_operator import certificates
from smart_operator.domains import ExistingRecord
from smart_operator.ports import Dns


@dataclass
class ZoneChallenges:
    dns: Dns
    zone_id: str
    uid: str
    comment: str

    async def present(self, records: list[tuple[str, str]]) -> object:
        names = {name.rstrip(".").lower() for name, _ in records}
        stale: list[str] = []
        for name in sorted(names):
            for record in await self.dns.records(self.zone_id, name=name):
                existing = ExistingRecord(
                    record.id, record.type, record.name, record.content, tuple(record.tags),
                    record.comment,
                )  # fmt: skip
                if certificates.is_challenge_record(record.type, record.name) and (
                    existing.owned_by(self.uid)
                ):
                    stale.append(record.id)
        posts = [
            {
                "type": "TXT",
                "name": name.rstrip("."),
                # Cloudflare asks for TXT content in quotes (it warns otherwise).
                "content": f'"{value}"',
                "ttl": 60,
                "comment": self.comment,
            }
            for name, value in records
        ]
        made = await self.dns.batch(self.zone_id, posts=posts, patches=[], deletes=stale)
        return [record.id for record in made]

    async def clean(self, handle: object) -> None:
        assert isinstance(handle, list)
        for record_id in handle:
            await self.dns.delete_record(self.zone_id, str(record_id))
