"""The РЭМД protocol: SOAP messages, element names, message codes, WS-Security, transports, circuit and rate limits."""
