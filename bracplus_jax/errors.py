"""The errors users see: a single line naming what was wrong (and for input, what was expected)."""


class InputError(ValueError):
  """Bad input from the user: a file, key, spec, flag or config field.

  Command-line entry points print it as one line and exit non-zero, without a
  traceback; the message itself names the culprit and what was expected.
  """


class RunError(RuntimeError):
  """A run stopped for a reason found while training (a NaN loss, say); one line to the user.

  Command-line entry points print it as one line and exit with status 1.
  """
