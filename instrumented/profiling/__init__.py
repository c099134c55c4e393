"""Profile on demand: a superuser's request (``X-Instrumented-Profile: 1``) or the next N requests of a view.

``runner`` decides and runs a profile on the request path, ``engines``/``sampler`` are the profilers,
``tree`` the stored call tree, ``store`` memcached (profiles, arms, the flusher's share), ``views`` the pages.
"""
