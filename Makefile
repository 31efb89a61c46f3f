# The two commands of the README. Both do all the set-up they need.
.PHONY: setup check test demo proto bench clean-cache

setup:
	@scripts/setup.sh

check: setup
	@scripts/check.sh

# Static checks, then the whole test suite against a real Docker engine: Python,
# then `go test` in every Go module (the Go SDK's interop test starts a real agent).
test: check
	.venv/bin/pytest -q -p no:cacheprovider $(PYTEST_ARGS)
	scripts/gotest.sh

# Certificates + keys -> an agent -> containers driven over mTLS+HMAC -> auth verification.
demo: setup
	@scripts/demo.sh

proto: setup
	scripts/genproto.sh

bench: setup
	.venv/bin/python bench/run_all.py
