"""Identity and time are passed into mappers so their output is reproducible."""

import itertools
import uuid
from collections.abc import Callable

IdFactory = Callable[[], str]


def random_ids() -> IdFactory:
    """Return a factory of random UUID strings (for production use)."""
    return lambda: str(uuid.uuid4())


def sequential_ids(prefix: str = "00000000-0000-4000-8000-") -> IdFactory:
    """Return a factory of predictable UUID-shaped strings (for golden tests)."""
    counter = itertools.count(1)
    return lambda: f"{prefix}{next(counter):012d}"
