"""Tests for rgp_keras.distiller: fine-tuning a pruned classifier towards the dense model's outputs."""

import keras
import numpy as np
import pytest

import rgp_keras
from rgp_keras.data_aware.distill import SoftTargetDistillation
from rgp_keras.errors import InputTypeError, InputValueError
from rgp_keras.model_walk import to_numpy


def classifier(softmax=False, units=10, seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((12,)), keras.layers.Dense(32, activation="relu"),
                             keras.layers.Dense(32, activation="relu"),
                             keras.layers.Dense(units, activation="softmax" if softmax else None)])


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(512, 12)).astype("float32")
    return x, (x[:, :10].argmax(-1)).astype("int32")


def trained(model, data, epochs=20):
    model.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(
        from_logits=model.layers[-1].activation is not keras.activations.softmax))
    model.fit(*data, epochs=epochs, batch_size=64, verbose=0)
    return model


def test_fit_moves_the_student_towards_the_teacher_and_keeps_masks_and_teacher(data):
    dense = trained(classifier(), data)
    teacher_weights = [w.copy() for w in dense.get_weights()]
    pruned = rgp_keras.prune_regular_graph(dense, sparsity=0.75, nodes=8, seed=0)
    trainer = rgp_keras.distiller(pruned, dense)
    trainer.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = data[0]
    loss = SoftTargetDistillation(1.0)
    before = float(loss.compute_loss(dense(x), pruned(x)))
    trainer.fit(*data, epochs=10, batch_size=64, verbose=0)
    after = float(loss.compute_loss(dense(x), pruned(x)))
    assert after < 0.5 * before
    for wrapper in (layer for layer in pruned.layers if isinstance(layer, rgp_keras.RegularGraphPruning)):
        assert np.all(to_numpy(wrapper.kernel)[to_numpy(wrapper.mask) == 0] == 0)
    for old, new in zip(teacher_weights, dense.get_weights()):
        np.testing.assert_array_equal(old, new)
    # the user's dense model stays trainable: pruning it again gives a model that trains
    assert dense.trainable and all(layer.trainable for layer in dense.layers)
    again = rgp_keras.prune_regular_graph(dense, sparsity=0.75, nodes=8, seed=1)
    assert again.trainable_weights


def test_loss_is_zero_for_equal_outputs_and_matches_kl_on_probabilities():
    logits = np.random.default_rng(1).normal(size=(6, 5)).astype("float32")
    other = np.random.default_rng(2).normal(size=(6, 5)).astype("float32")
    softmax = lambda z: np.exp(z) / np.exp(z).sum(-1, keepdims=True)
    assert abs(float(SoftTargetDistillation(2.0).compute_loss(logits, logits))) < 1e-6
    p, q = softmax(logits / 2), softmax(other / 2)
    expected = 4 * np.mean(np.sum(p * np.log(p / q), -1))
    assert float(SoftTargetDistillation(2.0).compute_loss(logits, other)) == pytest.approx(expected, rel=1e-4)
    # the same distributions given as probabilities (a model ending in softmax) give the same loss
    loss = SoftTargetDistillation(2.0, from_logits=False)
    on_probabilities = loss.compute_loss(softmax(logits), softmax(other))
    assert float(on_probabilities) == pytest.approx(expected, rel=1e-3)


def test_softmax_output_is_detected(data):
    dense = trained(classifier(softmax=True), data, epochs=2)
    pruned = rgp_keras.prune_regular_graph(dense, sparsity=0.75, nodes=8, seed=0)
    assert rgp_keras.distiller(pruned, dense).distillation_losses[0].from_logits is False
    logits = classifier()
    assert rgp_keras.distiller(rgp_keras.prune_regular_graph(logits, sparsity=0.75, nodes=8, seed=0),
                               logits).distillation_losses[0].from_logits is True


@pytest.mark.parametrize("kwargs, error, words", [
    (dict(temperature=0), InputValueError, ["temperature", "> 0", "0"]),
    (dict(temperature="hot"), InputTypeError, ["temperature", "number"]),
    (dict(label_weight=1.5), InputValueError, ["label_weight", "[0, 1]", "1.5"]),
    (dict(label_weight="all"), InputValueError, ["label_weight", "[0, 1]"]),
])
def test_bad_arguments_are_named(data, kwargs, error, words):
    dense = classifier()
    pruned = rgp_keras.prune_regular_graph(dense, sparsity=0.75, nodes=8, seed=0)
    with pytest.raises(error) as raised:
        rgp_keras.distiller(pruned, dense, **kwargs)
    assert all(word in str(raised.value) for word in words)


def test_bad_models_are_named():
    dense = classifier()
    with pytest.raises(InputValueError, match="same model"):
        rgp_keras.distiller(dense, dense)
    with pytest.raises(InputTypeError, match="keras.Model.*got numpy"):
        rgp_keras.distiller(np.zeros(3), dense)
    single = classifier(units=1)
    with pytest.raises(InputValueError, match="one unit.*FeatureDistillation"):
        rgp_keras.distiller(classifier(units=1, seed=1), single)
    inputs = keras.Input((12,))
    two = keras.Model(inputs, [keras.layers.Dense(10)(inputs), keras.layers.Dense(10)(inputs)])
    with pytest.raises(InputValueError, match="2 outputs"):
        rgp_keras.distiller(classifier(), two)


def test_subclassed_teacher_needs_from_logits():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(10)

        def call(self, x):
            return self.dense(x)

        def get_config(self):
            return {}

    teacher = Net()
    teacher(np.zeros((1, 12), "float32"))
    with pytest.raises(InputValueError, match="from_logits=True or False"):
        rgp_keras.distiller(classifier(), teacher)
    assert rgp_keras.distiller(classifier(), teacher, from_logits=True).distillation_losses[0].from_logits


def test_teacher_that_cannot_be_copied_is_named():
    class Opaque(keras.Model):
        def __init__(self, units):
            super().__init__()
            self.dense = keras.layers.Dense(units)

        def call(self, x):
            return self.dense(x)

    teacher = Opaque(10)
    teacher(np.zeros((1, 12), "float32"))
    with pytest.raises(InputValueError, match="Cannot copy the teacher.*get_config/from_config"):
        rgp_keras.distiller(classifier(), teacher, from_logits=True)
    assert teacher.trainable


def test_unlabelled_data_is_enough_at_label_weight_zero(data):
    dense = trained(classifier(), data, epochs=5)
    pruned = rgp_keras.prune_regular_graph(dense, sparsity=0.75, nodes=8, seed=0)
    trainer = rgp_keras.distiller(pruned, dense)
    trainer.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = trainer.fit(data[0], epochs=3, batch_size=64, verbose=0).history
    assert history["distillation_loss"][-1] < history["distillation_loss"][0]
