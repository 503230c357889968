"""Test support: servers and processes the tests start for themselves."""
