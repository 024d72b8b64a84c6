"""What every command-line entry point shares: bad input is one line on stderr, not a traceback."""

from __future__ import annotations

import functools
import logging
import sys

from absl import logging as absl_logging
from typing import Callable

from bracplus_jax.errors import InputError


def exits_cleanly_on_input_errors(main: Callable[..., None]) -> Callable[..., None]:
  """Wraps an absl main so an InputError prints 'error: <message>' and exits with status 2."""

  @functools.wraps(main)
  def wrapped(*args, **kwargs):
    # JAX's search for accelerators and orbax's every save log at INFO, which absl would
    # print; the commands' own output says what matters.
    logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)
    absl_logging.set_verbosity(absl_logging.WARNING)
    try:
      return main(*args, **kwargs)
    except InputError as error:
      print(f"error: {error}", file=sys.stderr)
      sys.exit(2)

  return wrapped
