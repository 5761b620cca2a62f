"""One model (or adapter) load at a time in this process.

transformers builds a model's modules on the meta device and then fills in the weights, through
state that is process-wide, not per thread; two `from_pretrained` calls at once in one process
(the first requests for two models, or for a base and an adapter, arriving together) broke
each other: "Cannot copy out of meta tensor; no data!". Loads are rare and already slow, so
every load in the serving engine holds `LOADING`; it is always taken before a model's own lock.
"""

from __future__ import annotations

import threading

LOADING = threading.RLock()
