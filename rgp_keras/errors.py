"""Errors raised for invalid input: what was wrong and what is accepted.

They subclass the built-in `ValueError` / `TypeError`, so callers catching
those keep working; the `rgp` CLI prints an `InputError` as one line and
anything else (a bug) with its traceback.
"""


class InputError(Exception):
    """Invalid input given to rgp_keras (a value, a type, a file or a missing package)."""


class InputValueError(InputError, ValueError):
    pass


class InputTypeError(InputError, TypeError):
    pass


class MissingDependencyError(InputError, ImportError):
    pass


class BackendError(InputError, RuntimeError):
    """A step that needs the TensorFlow backend (LiteRT export) was called under another Keras backend."""


class ExportCheckError(RuntimeError):
    """A converted .tflite file did not run in LiteRT, or did not reproduce the Keras model (nothing was written)."""
