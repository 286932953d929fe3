"""The three ways a command fails, each with its own exit code (the CLI prints one line, no traceback).

- NrqcError (exit 2): the user's input is bad (file, option, model, address).
- CheckFailed (exit 1): the build ran but disagrees with the reference (onnxruntime).
- InternalError (exit 3): nrqc or TVM broke on input it accepted (a bug to report).
"""


class NrqcError(Exception):
    """Bad input from the user (file, option, model). The CLI prints it and exits 2."""

    exit_code = 2


class CheckFailed(Exception):
    """The built artifact disagrees with the reference (onnxruntime). The CLI exits 1."""

    exit_code = 1


class InternalError(Exception):
    """A step of nrqc (or TVM underneath) crashed on accepted input: not the user's fault.
    The message names the step and the cause in one line; the CLI exits 3."""

    exit_code = 3
