"""Tests use the product's local image builder."""

from driver.images import BUSYBOX_IMAGE, ensure_busybox_image

__all__ = ["BUSYBOX_IMAGE", "ensure_busybox_image"]
