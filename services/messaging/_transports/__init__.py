"""Implementations of ``services.messaging.transport`` (``services.messaging.transports`` picks one)."""
