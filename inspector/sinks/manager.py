"""The daemon's one hook into the sinks: ``SinkManager(...).start()`` / ``stop()`` / ``status()``.

``start`` turns on the outbox (the store then writes an event in each verdict transaction),
gives every configured sink its worker thread and cursor, and returns at once: a sink that
cannot connect is retried by its worker while inspection goes on. A sink new to the database
starts at the newest event (it is not flooded with history); cursors of sinks no longer
configured are dropped. Events every sink has passed are pruned from the outbox periodically.
"""
from __future__ import annotations

import importlib
import logging
import threading
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

from inspector.metrics import Counter, Gauge, Histogram, Metrics
from inspector.sinks.worker import SinkWorker
from inspector.storage.outbox import Event, OutboxReader, OutboxWriter

log = logging.getLogger("inspector.sinks")

# type -> (module, class): one explicit table, the protocol library imported only when configured
SINK_CLASSES = {
    "mqtt": ("inspector.sinks.mqtt", "MqttSink"),
    "webhook": ("inspector.sinks.webhook", "WebhookSink"),
    "modbus": ("inspector.sinks.modbus", "ModbusSink"),
    "opcua": ("inspector.sinks.opcua", "OpcUaSink"),
}
PRUNE_EVERY_S = 60.0
DELIVERY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0, 30.0)


@dataclass
class SinkContext:
    """What a sink may know of the daemon besides its own config."""

    source_names: Sequence[str]
    bundle_id: Optional[str] = None
    stats: Callable[[], dict] = field(default=lambda: {})  # the daemon's status (MQTT stats messages)


def build_sink(config, context: SinkContext):
    module, cls = SINK_CLASSES[config.type]
    return getattr(importlib.import_module(module), cls)(config, context)


class SinkMetrics:
    """The sinks' Prometheus families, added to the daemon's registry."""

    def __init__(self, metrics: Metrics):
        p = f"{metrics.namespace}_" if metrics.namespace else ""
        lock = metrics.lock
        self.up = Gauge(f"{p}sink_up", "1 while a sink is connected (servers: serving).", ("sink", "type"), lock)
        self.backlog = Gauge(f"{p}sink_backlog_events", "Outbox events a sink has not delivered yet.", ("sink",),
                             lock)
        self.delivered = Counter(f"{p}sink_delivered_total", "Events a sink delivered.", ("sink",), lock)
        self.errors = Counter(f"{p}sink_errors_total", "Failed connects or deliveries of a sink (each retried).",
                              ("sink",), lock)
        self.latency = Histogram(f"{p}sink_delivery_seconds", "From the verdict's commit to its delivery.",
                                 ("sink",), lock, buckets=DELIVERY_BUCKETS)
        for fam in (self.up, self.backlog, self.delivered, self.errors, self.latency):
            metrics.add_family(fam)

    def observe(self, sink: str, n: int, latencies_ms: list[float]) -> None:
        self.delivered.inc(n, sink=sink)
        for ms in latencies_ms:
            self.latency.observe(ms / 1000.0, sink=sink)

    def collect(self, workers: Sequence[SinkWorker]) -> None:
        for w in workers:
            self.up.set(1 if w.state in ("connected", "delivering") else 0, sink=w.name, type=w.sink.kind)
            self.backlog.set(w.backlog, sink=w.name)
            self.errors.inc(0, sink=w.name)  # a sample from the start, so rate() works from the first error
            self.errors.set_total(w.incident.count, sink=w.name)


class SinkManager:
    def __init__(self, configs: Sequence, store, context: SinkContext, *, metrics: Optional[Metrics] = None,
                 grace_s: float = 5.0, flush_s: float = 0.5):
        self.configs = list(configs)
        self.store = store
        self.context = context
        self.grace_s = grace_s
        self.flush_s = flush_s
        # built here, so a missing package or an unreadable secret stops the start with one line
        self.sinks = [build_sink(c, context) for c in self.configs]
        self.metrics = SinkMetrics(metrics) if metrics is not None and self.sinks else None
        if metrics is not None and self.metrics is not None:
            metrics.add_collector(lambda: self.metrics.collect(self.workers))
        self.workers: list[SinkWorker] = []
        self._stop = threading.Event()
        self._housekeeping: Optional[threading.Thread] = None

    def start(self) -> None:
        if not self.sinks:
            return
        reader = OutboxReader(self.store)
        writer = OutboxWriter()
        newest = reader.max_id()
        cursors = reader.cursors()
        names = {s.name for s in self.sinks}
        reader.drop_cursors(n for n in cursors if n not in names)
        for sink, cfg in zip(self.sinks, self.configs):
            cursor = cursors.get(sink.name)
            if cursor is None:
                cursor = newest
                reader.set_cursor(sink.name, cursor)  # saved now: events from here on are this sink's
            self.workers.append(SinkWorker(sink, reader, writer, cursor, accepts=_filter(cfg), flush_s=self.flush_s,
                                           on_delivered=self.metrics.observe if self.metrics else None))
        for w in self.workers:
            w.wake(newest)
            writer.add_listener(w.wake)
        self.store.outbox = writer  # from the next commit on, every verdict writes its event
        for w in self.workers:
            w.start()
        self._housekeeping = threading.Thread(target=self._prune_loop, args=(reader,), name="sinks-prune",
                                              daemon=True)
        self._housekeeping.start()
        log.info("sinks: %s", ", ".join(f"{w.name} ({w.sink.kind}, from event {w.cursor})" for w in self.workers))

    def stop(self) -> None:
        """Each sink delivers what waits for up to grace_s (if connected), saves its cursor, closes."""
        self._stop.set()
        for w in self.workers:
            w.request_stop(self.grace_s)
        for w in self.workers:
            w.join(self.grace_s + 15.0)
        if self._housekeeping is not None:
            self._housekeeping.join(5.0)
        left = {w.name: w.backlog for w in self.workers if w.backlog}
        if left:
            log.info("sinks: undelivered events kept in the outbox for the next start: %s",
                     ", ".join(f"{k} {v}" for k, v in left.items()))

    def status(self) -> dict:
        return {w.name: w.status() for w in self.workers}

    def _prune_loop(self, reader: OutboxReader) -> None:
        while not self._stop.wait(PRUNE_EVERY_S):
            try:
                n = reader.prune(min(w.saved_cursor for w in self.workers))
                if n:
                    log.debug("sinks: %d delivered event(s) pruned from the outbox", n)
            except Exception as exc:  # the database is busy or away: the next round prunes
                log.debug("sinks: outbox not pruned (%s)", exc)


def _filter(cfg) -> Callable[[Event], bool]:
    sources = frozenset(cfg.sources) if cfg.sources is not None else None
    verdicts = frozenset(cfg.verdicts)
    return lambda e: (sources is None or e.source in sources) and e.data.get("verdict") in verdicts
