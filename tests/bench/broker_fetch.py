"""What a consumer's ``fetch_max_wait_ms`` costs on the local broker (Tansu), idle and in latency:
``.venv/bin/python -m tests.bench.broker_fetch [--waits 10 500] [--records 30]``.

Starts a broker of its own on a free port, and for each wait: one consumer (kafka-python, as the
services make them) joins a group on a 3-partition topic, polls for 5 s with nothing to read (the
CPU it and the broker use meanwhile, as a share of one core), then receives records produced one by
one at random moments (the time from the producer's acknowledged send to the record in the
consumer's hands). A waiting fetch that the broker answers as soon as a record arrives makes the
latency independent of the wait; the idle cost is one fetch round trip per wait."""

from __future__ import annotations

import argparse
import random
import socket
import statistics
import subprocess
import time

from kafka import KafkaConsumer, KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic

from deploy.local.stack import port_open, tansu_binary
from tests.bench.placement import cpu_seconds

IDLE_SECONDS = 5


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def measure(bootstrap: str, broker_pid: int, wait_ms: int, records: int) -> str:
    consumer = KafkaConsumer("fetch-bench", bootstrap_servers=bootstrap, group_id=f"fetch-bench-{wait_ms}",
                             fetch_max_wait_ms=wait_ms, auto_offset_reset="latest", enable_auto_commit=False,
                             session_timeout_ms=6000, heartbeat_interval_ms=1000)
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0)
    try:
        deadline = time.time() + 30
        while not consumer.assignment() and time.time() < deadline:
            consumer.poll(500)
        consumer.poll(500)
        mine, broker, started = time.process_time(), cpu_seconds(broker_pid), time.time()
        while time.time() < started + IDLE_SECONDS:
            consumer.poll(200)
        elapsed = time.time() - started
        idle = (time.process_time() - mine) / elapsed
        broker_idle = (cpu_seconds(broker_pid) - broker) / elapsed
        latencies = []
        for n in range(records):
            time.sleep(random.uniform(0.05, 0.3))
            sent = time.perf_counter()
            producer.send("fetch-bench", key=str(n).encode(), value=b"x").get(timeout=10)
            got = False
            while not got:
                got = any(consumer.poll(1000).values())
            latencies.append((time.perf_counter() - sent) * 1000)
        latencies.sort()
        return (f"fetch_max_wait_ms {wait_ms:>4}: idle, the consumer {idle * 100:4.1f} % and the broker "
                f"{broker_idle * 100:4.1f} % of a core; acknowledged send -> record received: median "
                f"{statistics.median(latencies):.1f} ms, max {latencies[-1]:.1f} ms (n={records})")
    finally:
        consumer.close()
        producer.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--waits", type=int, nargs="+", default=[10, 500])
    parser.add_argument("--records", type=int, default=30)
    args = parser.parse_args()
    port = _free_port()
    listener = f"tcp://127.0.0.1:{port}"
    broker = subprocess.Popen([str(tansu_binary()), "broker", "--listener-url", listener,
                               "--advertised-listener-url", listener],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            if port_open("127.0.0.1", port):
                break
            time.sleep(0.1)
        bootstrap = f"127.0.0.1:{port}"
        admin = KafkaAdminClient(bootstrap_servers=bootstrap)
        admin.create_topics([NewTopic("fetch-bench", 3, 1)])
        admin.close()
        for wait in args.waits:
            print(measure(bootstrap, broker.pid, wait, args.records), flush=True)
    finally:
        broker.terminate()
        broker.wait(10)


if __name__ == "__main__":
    main()
