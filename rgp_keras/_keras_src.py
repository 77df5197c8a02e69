"""The one module that reaches into Keras's private `keras.src`: a Keras upgrade that moves these touches only
this file. Imported lazily, so that `rgp_keras` itself stays free of TensorFlow."""


def functional_class():
    """Keras 3's `Functional` model class (the class of `keras.Model(inputs, outputs)`)."""
    from keras.src.models.functional import Functional

    return Functional


def is_rebuildable(model):
    """Whether `model` is a Sequential or functional Keras 3 model, which `clone_model` rebuilds layer by layer."""
    import keras

    return isinstance(model, (keras.Sequential, functional_class()))


def input_signature(model):
    """The input specs Keras's own export uses for `model` (a subclassed model's come from its build)."""
    from keras.src.export.export_utils import get_input_signature

    return get_input_signature(model)
