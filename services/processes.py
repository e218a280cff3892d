"""Child processes that never outlive their parent.

``die_with_parent`` runs in a child between fork and exec (``preexec_fn``) or first thing in a
``multiprocessing`` child: Linux sends the child SIGKILL when its parent dies, even by ``kill -9``, so a
signer's signing processes (or a local broker) are never left behind. The child also gets a process group of
its own, so a Ctrl-C in the terminal reaches only the parent, which stops its children in order.
"""

from __future__ import annotations

import ctypes
import os
import signal

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """SIGKILL this process when its parent dies, and give it a process group of its own."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:
        pass
    os.setpgrp()
