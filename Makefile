# The two commands of the README. Both do all the set-up they need.
.PHONY: setup check test test-planted demo proto bench clean-cache images e2e

setup:
	@scripts/setup.sh

check: setup
	@scripts/check.sh

# Static checks, then the whole test suite against a real Docker engine: Python,
# then `go test` in every Go module (the Go SDK's interop test starts a real agent).
test: check
	.venv/bin/pytest -q -p no:cacheprovider -m "not planted" $(PYTEST_ARGS)
	scripts/gotest.sh

# The fuzzer against each planted scheduler bug, and with none (about 30 minutes; CI runs it).
test-planted: setup
	.venv/bin/pytest -q -p no:cacheprovider -s -m planted tests/test_fuzz_planted.py $(PYTEST_ARGS)

# Certificates + keys -> an agent -> containers driven over mTLS+HMAC -> auth verification.
demo: setup
	@scripts/demo.sh

proto: setup
	scripts/genproto.sh

bench: setup
	.venv/bin/python bench/run_all.py

# Every image of docker-compose.e2e.yml, built locally (scripts/build-images.sh; cached).
images: setup
	@scripts/build-images.sh

# The compose stack end to end: images, up, the seven suites in the test runner,
# the summary and report paths, down (even on failure). docs/compose.md.
e2e: setup
	@scripts/e2e.sh
