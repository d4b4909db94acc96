"""The ``broker`` fixture: one real Apache Kafka broker for the whole test session.

It runs from a temporary state directory on free ports and is stopped at the end;
its jars are cached under the real vmroc home, so Maven resolves them once per
machine. While it runs, ``VMROC_KAFKA`` points at it, so every ``vmroc.bus`` client
(and every ``vmroc`` subprocess) of the session uses it.
"""

from __future__ import annotations

import os
import shutil

import pytest

from vmroc import bus
from vmroc.deploy.broker import Broker, BrokerError, free_ports


def pytest_configure(config):
    """No test may start a detached broker through ``bus.bootstrap()`` (it would outlive
    the session): a test that needs Kafka asks for the ``broker`` fixture."""
    os.environ["VMROC_KAFKA_AUTOSTART"] = "0"


def require_broker_prerequisites(broker: Broker) -> None:
    """Fail (never skip) with how to install what is missing."""
    if not shutil.which(broker.java):
        pytest.fail(f"Java 17+ is needed for the Kafka broker tests and {broker.java!r} "
                    f"was not found: run `bash deploy/setup.sh` (or `apt-get install "
                    f"default-jre-headless`)", pytrace=False)
    if not (broker.jars_dir / ".complete").exists() and not shutil.which(broker.mvn):
        pytest.fail("Maven is needed once to fetch the Kafka jars and `mvn` was not found: "
                    "run `bash deploy/setup.sh` (or `apt-get install maven`)", pytrace=False)


@pytest.fixture(scope="session")
def broker(tmp_path_factory):
    """A running single-node Kafka broker with the vmroc topics (4 sample partitions)."""
    port, controller_port = free_ports(2)
    b = Broker(tmp_path_factory.mktemp("kafka-broker"), port=port,
               controller_port=controller_port)
    require_broker_prerequisites(b)
    try:
        b.start(timeout=180)
        bus.ensure_topics(b.bootstrap, partitions=4)
    except BrokerError as exc:
        b.stop()
        pytest.fail(f"could not start the test Kafka broker: {exc}", pytrace=False)
    saved = os.environ.get("VMROC_KAFKA")
    os.environ["VMROC_KAFKA"] = b.bootstrap
    try:
        yield b
    finally:
        if saved is None:
            os.environ.pop("VMROC_KAFKA", None)
        else:
            os.environ["VMROC_KAFKA"] = saved
        b.stop()
