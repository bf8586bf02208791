"""The bundled broker helper: free ports, our own process, clean stop."""

from __future__ import annotations

import pytest

from ray_deepsort.stream.broker import BrokerError, create_topics, local_broker, start_broker

pytestmark = pytest.mark.integration


def test_broker_serves_kafka_and_stops() -> None:
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition

    with local_broker() as broker:
        assert not 10002 <= broker.port < 20000
        create_topics(broker.bootstrap_servers, {"t": 2})
        producer = KafkaProducer(bootstrap_servers=broker.bootstrap_servers)
        producer.send("t", key=b"k", value=b"v", partition=1).get(timeout=10)
        producer.close()
        consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap_servers)
        assert consumer.partitions_for_topic("t") == {0, 1}
        consumer.assign([TopicPartition("t", 1)])
        consumer.seek_to_beginning()
        records = [r for batch in consumer.poll(timeout_ms=5000).values() for r in batch]
        consumer.close()
        assert [(r.key, r.value) for r in records] == [(b"k", b"v")]
        process = broker.process
    assert process.poll() is not None


def test_taken_port_is_detected() -> None:
    with local_broker() as first:
        with pytest.raises(BrokerError, match="port"):
            start_broker(port=first.port, attempts=1)
        assert first.alive()


def test_publish_cli_writes_decodable_frames(tmp_path: object) -> None:
    import argparse

    from ray_deepsort.stream import publish
    from ray_deepsort.stream.wire import decode_frame

    parser = argparse.ArgumentParser()
    publish.add_arguments(parser)
    with local_broker() as broker:
        args = parser.parse_args(
            [
                "--bootstrap-servers",
                broker.bootstrap_servers,
                "--topic",
                "cli-frames",
                "--create-topic",
                "2",
                "synthetic",
                "--cameras",
                "2",
                "--frames",
                "5",
                "--width",
                "160",
                "--height",
                "120",
            ]
        )
        assert publish.run(args) == 0
        from kafka import KafkaConsumer, TopicPartition

        consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap_servers)
        consumer.assign([TopicPartition("cli-frames", p) for p in (0, 1)])
        consumer.seek_to_beginning()
        records = []
        for _ in range(20):
            records += [r for batch in consumer.poll(timeout_ms=250).values() for r in batch]
            if len(records) >= 10:
                break
        consumer.close()
    frames = [decode_frame(r.value, r.key) for r in records]
    assert sorted((f.stream_id, f.frame_index) for f in frames) == sorted(
        (f"cam{c}", i) for c in range(2) for i in range(5)
    )
    assert all(f.image_format == "jpeg" and f.width == 160 for f in frames)
