"""Shared fixtures live in tests/fixtures/, one module per real peer."""

pytest_plugins = [
    "tests.fixtures.store",
    "tests.fixtures.emulator",
    "tests.fixtures.proxy",
]
