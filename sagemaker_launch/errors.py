"""The one error type of the launcher: its message says what the user must fix."""


class LaunchError(Exception):
    """A bad argument or an AWS refusal, explained; the CLI prints it and exits with status 2."""
