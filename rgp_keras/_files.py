"""File helpers shared by the graph format and the LiteRT export (no TensorFlow)."""

import os


def normal_file_mode():
    """The mode a file created with `open()` gets under the current umask (mkstemp's files are 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask
