"""User-facing errors: one line, naming the culprit, exit code 2 (no traceback)."""


class NrqcError(Exception):
    """Bad input from the user (file, option, model). The CLI prints it and exits 2."""

    exit_code = 2


class CheckFailed(Exception):
    """The built artifact disagrees with the reference (onnxruntime). The CLI exits 1."""

    exit_code = 1
