"""The one error type for bad user input: printed as one line, exit status 2."""


class UserError(Exception):
    """A problem the user must fix (bad file, row, field, credentials, unreachable server).

    The message is one line and names the file, row and field where there is one.
    """

    exit_code = 2


def where(path, row=None, column=None) -> str:
    """Format a location as `file[, row N][, column C]` for error messages."""
    parts = [str(path)]
    if row is not None:
        parts.append(f"row {row}")
    if column is not None:
        parts.append(f"column '{column}'")
    return ", ".join(parts)
