"""Llama Stack 0.6.1 front door: the post_training API (``client.post_training``) over the engine.

Llama Stack finds it through the package root (``get_provider_impl`` in ``llama_stack_provider_trl/__init__.py``,
the spec in ``provider.py``). Only this folder imports ``llama_stack_api``; deleting it removes the 0.6.1 door.
"""
