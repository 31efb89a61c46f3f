"""Calls to anyone's gRPC services by name, through server reflection (v1 or v1alpha)."""

from driver.dynamic.client import BodySigner, DynamicClient, Method, Tls

__all__ = ["BodySigner", "DynamicClient", "Method", "Tls"]
