"""The ``Transport`` implementations; ``services.remd.transports`` chooses among them."""
