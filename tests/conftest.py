import pytest

from tests.platform import Platform, start_test_stack


@pytest.fixture(scope="session")
def stack():
    """The whole platform, started as `make up` starts it, on the test ports and databases."""
    stack = start_test_stack()
    yield stack
    stack.stop_all()


@pytest.fixture(scope="session")
def platform(stack) -> Platform:
    return Platform(stack)
