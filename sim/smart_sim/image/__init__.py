"""The platform's container image (operator, intake and dashboard in one), built
without Docker and cached by content hash; ``spec`` is what the ``Dockerfile`` is
held to. ``python -m smart_sim.image`` builds it (``make image``)."""

from smart_sim.image.build import Image, ImageBuildError, ensure_image

__all__ = ["Image", "ImageBuildError", "ensure_image"]
