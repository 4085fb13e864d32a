"""Keep torch usable in processes forked after it ran (``AsyncVectorEnv``, ``multiprocessing``).

PyTorch's Linux wheels run intra-op parallelism (and MKL's threads) on GNU OpenMP,
``libgomp``, whose thread pool does not survive ``fork()``: the first parallel region
of a process starts the pool, a forked child inherits the pool's bookkeeping but not
its threads, and the child's first parallel region (``F.embedding`` in
:meth:`simulators.click_models.Attractiveness.item_vectors`, say) waits forever at a
barrier for workers that do not exist (GCC bug 60035; pytorch/pytorch#17199).
Gymnasium's ``AsyncVectorEnv`` hits exactly this with Linux's default start method: it
builds one environment in the parent to read its spaces, then forks its workers.

The only safe thread count in such a child is one (a team of one thread never touches
the inherited pool), so, as PyTorch's own ``DataLoader`` workers do, a forked child
runs torch on one thread. That costs nothing where it matters: the parent and
single-process environments keep their threads, and N worker processes on one
thread each is the configuration that avoids oversubscribing the cores anyway. A
child may raise the count again with ``torch.set_num_threads`` when it knows that its
parent never ran a parallel region.

Results are unchanged: every seeded array of a worker equals the in-process one (see
``tests/test_clients.py``).
"""

from __future__ import annotations

import os
import sys


def _one_torch_thread_in_child() -> None:
    """``os.register_at_fork`` child hook: one intra-op thread if torch is in use."""
    # Read sys.modules rather than importing: a process without torch has no pool,
    # and importing torch in every forked child would be slow.
    torch = sys.modules.get("torch")
    if torch is None or not hasattr(torch, "get_num_threads"):  # absent or half-imported
        return
    # Only OpenMP builds are affected (PyTorch's native pool re-creates itself after fork).
    if torch.backends.openmp.is_available() and torch.get_num_threads() > 1:
        torch.set_num_threads(1)


def install() -> None:
    """Register the hook once per process (importing :mod:`simulators` does this)."""
    global _installed
    if not _installed and hasattr(os, "register_at_fork"):  # POSIX only; spawn elsewhere
        os.register_at_fork(after_in_child=_one_torch_thread_in_child)
        _installed = True


_installed = False
