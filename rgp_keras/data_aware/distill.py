"""Fine-tune a pruned classifier towards the dense model's outputs (knowledge distillation).

After pruning, the dense model is the best teacher there is: its class
probabilities carry more than the labels. `distiller` builds Keras' own
`keras.distillation.Distiller` with the pruned model as the student and a
soft-target loss that is right for classifiers:

    KL( softmax(teacher / T) || softmax(student / T) ) * T^2

on logits, or on log-probabilities when the model ends in a softmax. Keras'
`LogitsDistillation()` with its default `loss="kl_divergence"` skips the
softmax (the string resolves to the plain function, not the `KLDivergence`
class its softmax branch checks for) and compares raw logits; on
benchmarks/oneshot.py's MLP (93.75 % pruned, seed 0, one epoch) that gave
77.9 % where the soft targets give 88.7 %.

The student's masks hold during `fit` (the wrapper applies them in every
call); strip or export the student afterwards as usual.
"""

import keras

from rgp_keras._checks import check_positive
from rgp_keras.errors import InputTypeError, InputValueError


class SoftTargetDistillation(keras.distillation.DistillationLoss):
    """KL divergence between the teacher's and the student's class distributions at `temperature`."""

    def __init__(self, temperature=1.0, from_logits=True):
        self.temperature = check_positive("temperature", temperature)
        self.from_logits = bool(from_logits)

    def _log_probabilities(self, outputs):
        if not self.from_logits:  # log p / T: the softmax below then gives p^(1/T), renormalised
            outputs = keras.ops.log(keras.ops.clip(outputs, keras.config.epsilon(), 1.0))
        return keras.ops.log_softmax(outputs / self.temperature, axis=-1)

    def compute_loss(self, teacher_outputs, student_outputs, **kwargs):
        teacher = self._log_probabilities(keras.ops.stop_gradient(teacher_outputs))
        student = self._log_probabilities(student_outputs)
        divergence = keras.ops.sum(keras.ops.exp(teacher) * (teacher - student), axis=-1)
        return keras.ops.mean(divergence) * self.temperature**2

    def get_config(self):
        return {"temperature": self.temperature, "from_logits": self.from_logits}


def distiller(student, teacher, temperature=1.0, label_weight=0.0, from_logits=None):
    """A `keras.distillation.Distiller` that trains `student` towards `teacher`'s class distribution.

    Args:
        student: the pruned Keras 3 model (any model with the teacher's inputs and output shape).
        teacher: the trained dense model. The Distiller gets a frozen copy of it (Keras' Distiller sets
            its teacher's `trainable` to False; a frozen dense model would be pruned into a frozen one).
        temperature: softens both distributions (> 0). 1.0, the default, did best in a probe on
            benchmarks/oneshot.py's MLP at 93.75 %, seed 0, one epoch: 88.7 % against 88.4 % (T = 2)
            and 88.3 % (T = 4).
        label_weight: weight of the compiled label loss, in [0, 1]; the soft targets get 1 - label_weight.
        from_logits: whether the outputs are logits. None: inferred from the layer that makes the
            teacher's output (a softmax activation or `Softmax` layer means probabilities).

    Returns the Distiller, not compiled: compile it with an optimizer, the label loss (Keras requires
    one even at label_weight=0) and metrics, `fit` it, then use `student`. At label_weight=0 unlabelled
    inputs are enough (`fit(x)`).

        trainer = rgp_keras.distiller(pruned, dense)
        trainer.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), ["accuracy"])
        trainer.fit(x, y, epochs=1)
        rgp_keras.export_tflite(pruned, "model.tflite")
    """
    for name, model in (("student", student), ("teacher", teacher)):
        if not isinstance(model, keras.Model):
            raise InputTypeError(f"`{name}` must be a Keras 3 `keras.Model`, got {type(model).__module__}."
                                 f"{type(model).__name__} (tf_keras models: fine-tune with your own loss).")
    if student is teacher:
        raise InputValueError("`student` and `teacher` are the same model: pass the pruned model as "
                              "`student` and the dense model it was pruned from as `teacher`.")
    weight_ok = isinstance(label_weight, (int, float)) and not isinstance(label_weight, bool)
    if not weight_ok or not 0 <= label_weight <= 1:
        raise InputValueError(f"`label_weight` must be a number in [0, 1], got {label_weight!r}.")
    temperature = check_positive("temperature", temperature)
    if from_logits is None:
        from_logits = not _ends_in_softmax(teacher)
    for name, model in (("student", student), ("teacher", teacher)):
        outputs = getattr(model, "outputs", None) or []
        if len(outputs) > 1:
            raise InputValueError(f"`{name}` has {len(outputs)} outputs; `distiller` takes single-output "
                                  "classifiers (use keras.distillation.Distiller with a loss per output).")
        if outputs and outputs[0].shape[-1] == 1:
            raise InputValueError(f"`{name}`'s output has one unit: soft targets need one output per class "
                                  "(for a single-unit output use keras.distillation.Distiller with "
                                  "keras.distillation.FeatureDistillation(loss='mse')).")
    return keras.distillation.Distiller(_frozen_copy(teacher), student,
                                        SoftTargetDistillation(temperature, from_logits),
                                        student_loss_weight=float(label_weight))


def _frozen_copy(model):
    try:
        copy = keras.models.clone_model(model)
    except Exception as error:  # a subclassed model without get_config / from_config
        raise InputValueError(f"Cannot copy the teacher {model.name!r} (clone_model raised "
                              f"{type(error).__name__}); `distiller` copies it so that the Distiller's "
                              "freezing leaves yours trainable. Give the model get_config/from_config, "
                              "or use keras.distillation.Distiller directly (it sets teacher.trainable = "
                              "False).") from error
    copy.set_weights(model.get_weights())
    copy.trainable = False
    return copy


def _ends_in_softmax(model):
    """True when the layer producing `model`'s output is a softmax; raise when the model cannot tell."""
    outputs = getattr(model, "outputs", None)
    if not outputs:
        raise InputValueError(f"Cannot tell whether {model.name!r} outputs logits or probabilities (a "
                              "subclassed model has no output layer to look at): pass from_logits=True or "
                              "False.")
    layer = outputs[0]._keras_history.operation
    activation = getattr(layer, "activation", None)
    return isinstance(layer, keras.layers.Softmax) or activation is keras.activations.softmax
