"""Wire-level pieces shared by the agent and the driver.

The generated protobuf modules live under ``shakedown.agent.v1`` (mirroring
``proto/``), next to the HMAC signing scheme, keyring, label names and the
error types: everything both ends of a call must agree on, byte for byte.
"""
