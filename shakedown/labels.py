"""Docker label keys the agent stamps on what it owns.

Labels are the agent's only persistent state: after a restart it rebuilds its
sessions from them, so every field a session needs to be reaped lives here.
Callers may not set keys under PREFIX.
"""

PREFIX = "io.shakedown."

MANAGED_BY = PREFIX + "managed-by"
MANAGED_BY_VALUE = "shakedown-agent"
NODE = PREFIX + "node"
SESSION = PREFIX + "session"
SESSION_NAME = PREFIX + "session.name"
SESSION_TTL = PREFIX + "session.ttl"
SESSION_PERSISTENT = PREFIX + "session.persistent"
SESSION_PRINCIPAL = PREFIX + "session.principal"
SESSION_CREATED = PREFIX + "session.created"
# Session labels the caller asked for are copied under this prefix.
SESSION_LABEL_PREFIX = PREFIX + "session.label."
# Room for the roadmap: fault records (partitions, latency proxies) carry the
# session that injected them, so expiry heals them too.
FAULT = PREFIX + "fault"


def is_reserved(key: str) -> bool:
    return key.startswith(PREFIX)
