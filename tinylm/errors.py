"""The one exception type for bad user input.

Entry points catch `InputError` and print its message as a single `error: ...` line with a
non-zero exit, instead of a traceback. The message names the input and says what to do.
"""


class InputError(Exception):
    """A problem with what the user asked for (a path, a config value, a checkpoint), not a bug."""
