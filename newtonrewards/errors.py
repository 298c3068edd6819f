"""The one exception type the CLI turns into a single clear line and exit code 2."""


class UserError(Exception):
    """Bad input from the user (a file, a flag, a config value): the message names the thing and the problem."""
