"""Kafka side of the stream job: wire format, producer, consumer loop, dead letters, config.

Heavy dependencies (Ray, kafka-python, torch) are imported where they are used, so importing
`ray_deepsort.stream.wire` or `.config` stays cheap.
"""
