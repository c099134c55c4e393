"""Per-view stats, in the order data flows: probe → aggregate → snapshot → flusher → (memcached) → reader."""
