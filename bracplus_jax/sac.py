"""`bracplus_jax.sac`: the old name of `bracplus_jax.collection.sac`, that module itself,
kept for code that imports it from here."""

import sys

from bracplus_jax.collection import sac

sys.modules[__name__] = sac
