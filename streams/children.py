"""What a child process of the worker does first (its process pool's initializer): it ends
within a second of the worker that started it, even one killed outright, instead of keeping
its connections open as an orphan. (A pool's pipes never close for it: the child holds both
ends of its call queue. Linux's parent-death signal did not end it when the worker was
killed; tests/integration/test_ingest.py kills one.)"""

from __future__ import annotations

import os
import threading
import time


def end_with_parent(parent: int) -> None:
    """``parent``: the worker's pid, given by it, so a child that starts after its worker
    died ends too."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)  # the worker is gone: nothing will ask for or read a result

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()
