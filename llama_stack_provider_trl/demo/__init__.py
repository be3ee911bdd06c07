"""Offline demo and the helpers it shares with the tests: a tiny local model, a stack server, a token endpoint."""
