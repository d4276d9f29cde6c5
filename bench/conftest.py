"""`pytest bench/` measures at the real shapes and asserts the acceptance ratios; `--bench-smoke`
runs every case at tiny shapes (well under a minute) and checks that it runs and is correct."""

import pytest


def pytest_addoption(parser):
    parser.addoption("--bench-smoke", action="store_true", help="tiny shapes, no timing assertions (CI)")


@pytest.fixture(scope="session")
def smoke(request):
    return request.config.getoption("--bench-smoke")
