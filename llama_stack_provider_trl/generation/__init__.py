"""The generation process: the models the OGX server serves run here (torch, transformers, peft), one process
started by serving/worker_client.py and talked to over its stdin and stdout (serving/protocol.py)."""
