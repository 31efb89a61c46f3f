"""Imported first by the agent's entry point: keep gRPC core's own log lines out.

gRPC core reads GRPC_VERBOSITY once, when grpc is imported, and would otherwise
print ``E0000 ...`` lines on stderr, in the middle of the agent's JSON log. A
value the user set is kept.
"""

import os

os.environ.setdefault("GRPC_VERBOSITY", "NONE")
