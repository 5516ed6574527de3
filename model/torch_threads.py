"""Which thread of a server runs torch on every core: the generation engine's worker, and only it.

torch's OpenMP runtime (libgomp) gives each thread that runs a parallel torch op a thread pool of its
own, and once the pools hold more threads than there are cores it stops spinning between parallel
regions and puts its threads to sleep instead; a decoding step is hundreds of small parallel regions,
each then paying a wake-up. Measured on a 2-core machine (tiny preset, 8 streams of 5 s, one decoding
loop): 2.9 s in the thread that loaded the model, 5.2 s in a worker thread after the loading thread had
used both cores, 3.5 s when the loading thread had kept to one. So a server calls `keep_to_one_thread`
in its main thread before any torch work, and hands the count it returns to the engine, whose worker
takes that many threads when it starts. Other threads that run torch on the side (the request log)
keep to one thread as well.
"""

from __future__ import annotations

import torch


def keep_to_one_thread() -> int:
    """Run torch in the calling thread on one intra-op thread; returns the count it had (for the engine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    return threads
