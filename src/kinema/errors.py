"""The one error type meant for people.

Every problem a user can cause or fix (a bad size, a missing folder, an empty
prompt) raises a `KinemaError` whose message is one line naming the problem and
the fix. The CLI prints it as one line; the server returns it in OpenAI's error
schema. Anything else escaping is a bug.
"""

BAD_REQUEST = "invalid_request"  # the API's code for a bad field, whichever layer finds it


def first_line(err: BaseException) -> str:
    """The first line of a library's error, for a one-line KinemaError; its type's name when it says nothing (an
    empty file's EOFError)."""
    return next((line for line in str(err).splitlines() if line.strip()), type(err).__name__)


class KinemaError(Exception):
    """A user-facing error: `str(err)` is one line saying what is wrong and how to fix it."""

    def __init__(self, message: str, *, code: str = BAD_REQUEST, param: str | None = None):
        super().__init__(message)
        self.code = code
        self.param = param
