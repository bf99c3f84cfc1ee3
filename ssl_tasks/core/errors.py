"""The one exception type a user is meant to read."""


class UserError(Exception):
    """A problem with the user's input (path, file, name, parameter).

    The CLI prints it as a single ``error: ...`` line and exits with status 2.
    """
