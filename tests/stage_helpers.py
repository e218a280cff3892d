"""Run a services.messaging.app.App in a background thread for a test, and stop it cleanly afterwards."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator

from services.messaging.app import App


@contextlib.contextmanager
def running(app: App) -> Iterator[App]:
    """The app runs (its own event loop, in a thread) for the duration of the ``with`` block."""
    loop = asyncio.new_event_loop()
    errors: list[BaseException] = []

    def target() -> None:
        try:
            loop.run_until_complete(app.run(signals=False))
        except BaseException as exc:  # surfaced in the test below
            errors.append(exc)
        finally:
            loop.close()

    thread = threading.Thread(target=target, name=f"app-{app.name}", daemon=True)
    thread.start()
    try:
        yield app
    finally:
        if not loop.is_closed():
            loop.call_soon_threadsafe(app.request_stop)
        thread.join(timeout=60)
        assert not thread.is_alive(), "the app did not stop within 60 s of request_stop()"
        if errors:
            raise errors[0]
