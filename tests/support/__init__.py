"""Helpers the tests share (ports, servers, browser, MySQL); fixtures stay in conftest.py and import from here."""
