"""`llama-stack-trl`: follow and submit this provider's training jobs from a shell, through a running server.

It runs in the user's shell, often far from the server: it imports llama-stack-client, rich, PyYAML and the
standard library only, never the training libraries (tests/test_cli.py checks).
"""
