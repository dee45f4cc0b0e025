"""Errors that mean "this input cannot be used". The CLI prints their message as one line, without a traceback.

Messages name the file (or option) and what is wrong with it, e.g. ``"model.ply: header ends before 'end_header'"``.
"""


class InputError(ValueError):
    """A file, folder or option that cannot be used as given."""
