"""`bracplus_jax.sac` is `bracplus_jax.collection.sac`, that module itself, under a short name."""

import sys

from bracplus_jax.collection import sac

sys.modules[__name__] = sac
