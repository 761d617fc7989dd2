"""The one exception type for mistakes a user can fix.

A ``UserError`` carries a single line that names the input, what is wrong and
the fix; the CLI prints it and exits non-zero, without a traceback. Anything
else that escapes is our bug and keeps its traceback.
"""


class UserError(Exception):
    """A mistake in the user's input, with the fix in its message.

    >>> str(UserError('ari.toml: node "a": slots must be a whole number, got "two" — write 2'))
    'ari.toml: node "a": slots must be a whole number, got "two" — write 2'
    """
