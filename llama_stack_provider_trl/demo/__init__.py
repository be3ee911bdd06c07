"""Offline demo and the helpers it shares with the tests: a tiny local model and a stack server."""
