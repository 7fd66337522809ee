"""``python -m smart_sim.image``: build the platform's image (once per content hash)
and print where it is; ``lock`` re-resolves the pinned dependencies; ``key`` prints
the cache key of the tree as it is."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from smart_sim.image import lock, spec
from smart_sim.image.build import app_key, ensure_image, resolve_bundle


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("command", nargs="?", choices=["build", "lock", "key"], default="build")
    parser.add_argument(
        "--agent-bundle",
        type=Path,
        help="embed this agent bundle (default: $SMARTSERVER_AGENT_BUNDLE, else the one "
        "built from this tree)",
    )
    args = parser.parse_args()
    if args.command == "lock":
        pins = lock.resolve()
        lock.write_lock(pins)
        print(f"{spec.LOCK}: {len(pins)} pinned packages")
        return
    if args.command == "key":
        print(app_key(resolve_bundle(args.agent_bundle)))
        return
    started = time.monotonic()
    image = ensure_image(args.agent_bundle)
    print(f"{image.reference}  {image.digest}")
    print(f"  archive: {image.archive} ({image.size / 1e6:.0f} MB)")
    print(
        f"  load it: ctr -n k8s.io images import --base-name {spec.FULL_REPOSITORY} {image.archive}"
    )
    print(f"  ready in {time.monotonic() - started:.1f} s")


if __name__ == "__main__":
    main()
