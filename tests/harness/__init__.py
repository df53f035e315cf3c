"""Shared test-and-bench tooling: drivers of the real gpuhub stack.

`stack.py` starts the stack with Docker Compose (project gpuhub-test, a test OIDC provider
beside it) and talks to it over verified HTTPS through the proxy. The docker and browser tiers
use it through the `stack` fixture (tests/conftest.py); the benchmarks in bench/ start it
themselves (`from tests.harness.stack import start_stack`). A change here changes both, so it
holds no test assertions and no benchmark figures.
"""
