"""Keras example models, including the seed's linear regression."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

__all__ = ["keras_cnn", "save_linear_regression"]


def _keras():
    """Keras 3 itself: ``tf.keras`` can resolve to tf_keras once tf_keras has been imported in the process."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    return keras


def save_linear_regression(path: str | os.PathLike, epochs: int = 100, seed: int = 0) -> Path:
    """The seed example: ``Input(shape=(1,)) -> Dense(1)``, adam/mse, fitted on y = 2x + 1, saved as .h5."""
    keras = _keras()
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.layers.Input(shape=(1,)), keras.layers.Dense(1)])
    # steps_per_execution only batches training steps into one graph call: same maths, less overhead.
    model.compile(optimizer="adam", loss="mse", steps_per_execution=25)
    x = np.linspace(-1.0, 1.0, 200, dtype=np.float32).reshape(-1, 1)
    model.fit(x, 2.0 * x + 1.0, epochs=epochs, batch_size=8, verbose=0)
    path = Path(path)
    model.save(path)
    return path


def keras_cnn(path: str | os.PathLike, input_shape=(32, 32, 3), num_classes: int = 10, seed: int = 0) -> Path:
    """A small Keras CNN (Conv, BatchNorm, depthwise conv, residual add), saved as .keras."""
    keras = _keras()
    keras.utils.set_random_seed(seed)
    inputs = keras.layers.Input(shape=input_shape)
    x = keras.layers.Conv2D(16, 3, padding="same", use_bias=False)(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU(6.0)(x)
    y = keras.layers.DepthwiseConv2D(3, padding="same")(x)
    y = keras.layers.Conv2D(16, 1)(y)
    x = keras.layers.Add()([x, y])
    x = keras.layers.Conv2D(32, 3, strides=2, padding="same", activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(num_classes)(x)
    model = keras.Model(inputs, outputs)
    path = Path(path)
    model.save(path)
    return path
