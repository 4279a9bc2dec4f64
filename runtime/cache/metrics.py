"""The response cache's Prometheus metrics (in the app's registry). Labels are bounded: `model` is
a group name of the plan, the others closed sets."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

__all__ = ["CacheMetrics"]


class CacheMetrics:
    """Hits, misses, bytes, evictions."""

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.lookups = Counter(
            "sidegate_cache_requests", "Requests to cached groups by result: `hit`, `miss`, or `bypass` (not looked "
            "up: the request samples, or the client sent no-cache).", ["model", "result"], registry=r)
        self.stored = Counter("sidegate_cache_stores", "Answers written to the cache.", ["model"], registry=r)
        self.skipped = Counter(
            "sidegate_cache_store_skipped", "Answers not cached, by reason: `too_large` (over max_entry), "
            "`incomplete` (an error or a stream that did not end properly), `no_store` (the client asked), "
            "`queue_full` (the writer was behind).", ["reason"], registry=r)
        self.bytes_stored = Counter("sidegate_cache_stored_bytes", "Bytes of answers written to the cache.",
                                    registry=r)
        self.bytes_served = Counter("sidegate_cache_hit_bytes", "Bytes of answers served from the cache.",
                                    registry=r)
        self.size = Gauge("sidegate_cache_memory_bytes", "Bytes held by the memory backend (keys, answers, "
                          "overhead).", registry=r)
        self.entries = Gauge("sidegate_cache_memory_entries", "Entries held by the memory backend.", registry=r)
        self.evictions = Counter(
            "sidegate_cache_evictions", "Entries dropped by the memory backend, by reason: `size` (least recently "
            "used, past max_size), `expired`, `replaced`.", ["reason"], registry=r)
        self.errors = Counter(
            "sidegate_cache_backend_errors", "Cache backend calls that failed (the request went on as a miss), by "
            "operation.", ["operation"], registry=r)
        self.saved = Counter("sidegate_cache_saved_usd", "What the answers served from the cache cost when they "
                             "were paid for.", ["model"], registry=r)
        self.purged = Counter("sidegate_cache_purged", "Entries purged through the admin API.", registry=r)
        for reason in ("size", "expired", "replaced"):
            self.evictions.labels(reason)
