"""Error references: capture and store tracebacks, scrub secrets, answer handler500 and the lookup pages."""
