"""What the server and the processes it starts (training, generation) share: the contract of a job's directory
(job.json's shared fields, events.jsonl, checkpoints), the rules both sides apply, and how a child process starts,
hands over and dies with its server. No training library and no front door is imported here."""
