"""Surviving ``os.fork()``: only the forking thread lives on in the child.

Locks another thread held stay held forever and worker threads are gone, so
objects that own locks or threads re-create them in the child, as the SDK's
batch processors do.
"""

from __future__ import annotations

import os
import weakref
from typing import Callable


def reinit_after_fork(method: Callable[[], None]) -> None:
    """Call the bound ``method`` in every child forked from now on (while its object lives)."""
    if not hasattr(os, "register_at_fork"):
        return
    weak_method = weakref.WeakMethod(method)

    def _after_in_child() -> None:
        alive = weak_method()
        if alive is not None:
            alive()

    os.register_at_fork(after_in_child=_after_in_child)
