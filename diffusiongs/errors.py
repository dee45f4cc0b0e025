"""Errors that mean "this input cannot be used". The CLI prints their message as one line, without a traceback.

Messages name the file (or option) and what is wrong with it, e.g. ``"model.ply: header ends before 'end_header'"``.
"""

import sys
from collections.abc import Callable
from typing import NoReturn


class InputError(ValueError):
    """A file, folder or option that cannot be used as given."""


class InputWarning(UserWarning):
    """An input that is used, but probably not as the user hoped (a tiny image, a fallback method). The CLI prints
    its message as one line."""


class TrainingDiverged(RuntimeError):
    """Training stopped because its loss or gradients stayed non-finite, or a state to be saved was non-finite.

    The message names the last good checkpoint; the CLI prints it as one line and exits with :attr:`exit_code`.
    """

    exit_code = 3


def exit_with(main: Callable[[], int], prog: str) -> NoReturn:
    """Exit with ``main()``'s code; an :class:`InputError` becomes one line on stderr (``PROG: error: ...``) and exit
    code 2, as in the ``diffusiongs`` command, instead of a traceback. For the scripts beside the package."""
    try:
        code = main()
    except InputError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        code = 2
    sys.exit(code)
