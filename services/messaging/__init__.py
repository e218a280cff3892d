"""Kafka plumbing: client settings, topics, the dead-letter format, the local broker and the worker runtime."""
