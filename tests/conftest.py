"""Shared pytest setup: one lab and one broker per test session.

Fixtures live in small plugin modules so each stage owns its own:
``tests/fixtures_lab.py`` (guests) and ``tests/fixtures_broker.py`` (Kafka).
"""

import os

pytest_plugins = [
    name for name in ("tests.fixtures_lab", "tests.fixtures_broker", "tests.cpu_hog")
    if os.path.exists(os.path.join(os.path.dirname(__file__), name.split(".")[1] + ".py"))
]
