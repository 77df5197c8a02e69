"""Register rgp_keras's layer classes with Keras / tf_keras whatever the import order.

Loading a saved pruned model needs the classes registered, but `import
rgp_keras` must stay light (no TensorFlow) for the graph tools. So the layer
modules are imported as soon as their framework is: at once if it is already
imported, otherwise right after its own import finishes (a post-import hook on
`sys.meta_path`, as `wrapt`'s import hooks do).
"""

import importlib
import importlib.abc
import sys

# framework module -> the rgp_keras modules that register our classes with it.
LAYER_MODULES = {
    "keras": ("rgp_keras.masking.wrapper", "rgp_keras.export._kernels"),
    "tensorflow_model_optimization": ("rgp_keras.tfmot.layers",),
}


class _Loader(importlib.abc.Loader):
    """Runs the framework's own loader, then imports our layer modules."""

    def __init__(self, loader, layer_modules):
        self.loader = loader
        self.layer_modules = layer_modules

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        self.loader.exec_module(module)
        for name in self.layer_modules:
            importlib.import_module(name)


class _Hook(importlib.abc.MetaPathFinder):
    def __init__(self, pending):
        self.pending = pending

    def find_spec(self, name, path, target=None):
        if name not in self.pending:
            return None
        layer_modules = self.pending.pop(name)
        if not self.pending:
            sys.meta_path.remove(self)
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                if spec.loader is not None:
                    spec.loader = _Loader(spec.loader, layer_modules)
                return spec
        return None


def register():
    """Import the layer modules of frameworks already imported; hook the others' imports."""
    pending = {}
    for framework, layer_modules in LAYER_MODULES.items():
        if framework in sys.modules:
            for name in layer_modules:
                importlib.import_module(name)
        else:
            pending[framework] = layer_modules
    if pending and not any(isinstance(finder, _Hook) for finder in sys.meta_path):
        sys.meta_path.insert(0, _Hook(pending))
