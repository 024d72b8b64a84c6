"""The one error type users see: a single line naming what was wrong and what was expected."""


class InputError(ValueError):
  """Bad input from the user: a file, key, spec, flag or config field.

  Command-line entry points print it as one line and exit non-zero, without a
  traceback; the message itself names the culprit and what was expected.
  """
