"""Where the development components meet by default: ``emd emulator`` and ``emd callbacks`` listen here, and
``emd certs dev-config`` writes these addresses, so components started one by one find each other."""

from __future__ import annotations

#: ``emd emulator``'s default port; the development configuration sends registerDocument to it
DEV_EMULATOR_PORT = 8085
DEV_EMULATOR = f"http://127.0.0.1:{DEV_EMULATOR_PORT}"
#: ``emd callbacks`` on its default port (EMD_CALLBACK_PORT, 8086); the service answers on any path
DEV_CALLBACK_URL = "http://127.0.0.1:8086/callback"
