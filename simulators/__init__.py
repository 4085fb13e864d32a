"""User-click simulators and the data they are learned from.

This layer imports neither :mod:`rerank_env` nor :mod:`agents`.
"""

from simulators import _fork

# libgomp's thread pool does not survive fork(): forked children run torch on one
# thread (AsyncVectorEnv workers would deadlock otherwise; see simulators._fork).
_fork.install()
