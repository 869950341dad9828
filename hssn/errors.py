"""The error a user can fix: the ``hssn`` command prints it as one line and exits with status 2."""


class UserError(ValueError):
    """A bad config value, a missing or broken dataset / checkpoint / image file, a refused request: the message
    says what is wrong and with which file or key. Anything else that escapes a command is a bug and keeps its
    traceback."""
