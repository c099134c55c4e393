"""The MySQL client/server wire format: framing, packet layouts, the response walker."""
