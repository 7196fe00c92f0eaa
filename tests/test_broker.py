"""The embedded broker (Tansu as a child process): it serves Kafka clients, refuses a bad
binary clearly, and never outlives its owner."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from app.errors import ConfigError
from connectors.broker import EmbeddedBroker, free_port
from tests.harness import alive, tansu_children, wait_for


async def _round_trip(bootstrap: str, topic: str) -> bytes:
    """Create ``topic``, produce one record and read it back; return its value."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"hello", key=b"k")
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        record = await consumer.getone()
    finally:
        await consumer.stop()
    return record.value


@pytest.mark.kafka
async def test_embedded_broker_serves_a_kafka_client_and_leaves_no_process() -> None:
    """Start on a free port, round-trip one record with aiokafka, stop: the pid is gone."""
    broker = EmbeddedBroker().start()
    pid = broker.pid
    try:
        assert pid is not None
        assert alive(pid)
        assert broker.bootstrap == f"127.0.0.1:{broker.port}"
        assert await _round_trip(broker.bootstrap, "broker.roundtrip") == b"hello"
    finally:
        broker.stop()

    assert not alive(pid)
    assert broker.pid is None


def test_a_non_executable_tansu_bin_is_refused_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """ARBITER_TANSU_BIN at a plain file: ConfigError naming the variable and the fix."""
    fake = tmp_path / "tansu"
    fake.write_text("not a binary\n")
    fake.chmod(stat.S_IRUSR | stat.S_IWUSR)
    monkeypatch.setenv("ARBITER_TANSU_BIN", str(fake))

    with pytest.raises(ConfigError) as caught:
        EmbeddedBroker().start()

    message = str(caught.value)
    assert "ARBITER_TANSU_BIN" in message
    assert str(fake) in message
    assert "unset it" in message


@pytest.mark.kafka
def test_broker_command_serves_kafka_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    """`arbiter broker --port P` serves Kafka on P; SIGINT stops it and its Tansu child."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARBITER_")}
    proc = subprocess.Popen(
        [sys.executable, "-c", "from app.cli import main; main()", "broker", "--port", str(port)],
        env={**env, "COLUMNS": "200"},
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        # A shell's background job inherits SIGINT ignored; a user's Ctrl-C does not.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # noqa: PLW1509
    )
    try:
        children: list[int] = []

        def listening() -> bool:
            assert proc.poll() is None, proc.communicate()[0]
            children[:] = tansu_children(proc.pid)
            if not children:
                return False
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            except OSError:
                return False
            return True

        wait_for(listening, 30, f"`arbiter broker` listening on {port}")
        assert asyncio.run(_round_trip(f"127.0.0.1:{port}", "cli.roundtrip")) == b"hello"

        proc.send_signal(signal.SIGINT)
        stdout, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)

    assert proc.returncode == 0, stdout
    assert "broker stopped" in stdout
    wait_for(lambda: not any(alive(pid) for pid in children), 10, "Tansu exit")
