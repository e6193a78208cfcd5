"""Build hostile model files whose payload writes a marker file when it runs: ``python hostile_models.py OUT MARKER``.

Run in a subprocess of its own (it imports tf_keras, which changes what ``tf.keras`` means in a process). Building
a Lambda model calls the lambda once: the marker that leaves is removed before the script ends, so a marker seen
later means the payload ran when edgec loaded the file.
"""

from __future__ import annotations

import json
import os
import sys
import zipfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _payload(marker: str):
    return lambda x: (open(marker, "w").write("ran"), x)[1]


def tf_keras_lambda_h5(out: Path, marker: str) -> None:
    """The issue's reproduction: a tf.keras 2 .h5 with a Lambda layer (marshalled bytecode)."""
    import tf_keras

    model = tf_keras.Sequential([tf_keras.layers.Input(shape=(1,)), tf_keras.layers.Lambda(_payload(marker)),
                                 tf_keras.layers.Dense(1)])
    model.save(out / "lambda_tfkeras.h5")


def keras3_lambda(out: Path, marker: str) -> None:
    """A Keras 3 .keras and .h5 with a Lambda layer."""
    import keras

    model = keras.Sequential([keras.layers.Input(shape=(1,)), keras.layers.Lambda(_payload(marker)),
                              keras.layers.Dense(1)])
    model.save(out / "lambda_keras3.keras")
    model.save(out / "lambda_keras3.h5")


def keras3_custom_module(out: Path, marker: str) -> None:
    """A .keras whose config names a layer from module ``payload_module`` (importing it writes the marker)."""
    import keras

    model = keras.Sequential([keras.layers.Input(shape=(1,)), keras.layers.Dense(1)])
    plain = out / "plain.keras"
    model.save(plain)
    with zipfile.ZipFile(plain) as src:
        members = {name: src.read(name) for name in src.namelist()}
    config = json.loads(members["config.json"])
    layer = config["config"]["layers"][-1]
    layer["module"], layer["registered_name"] = "payload_module", "payload_module>Dense"
    members["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(out / "custom_module.keras", "w") as dst:
        for name, data in members.items():
            dst.writestr(name, data)
    (out / "payload_module.py").write_text(f"open({marker!r}, 'w').write('ran')\nfrom keras.layers import Dense\n")
    plain.unlink()


def savedmodel_write_file(out: Path, marker: str) -> None:
    """A SavedModel whose serving function writes a file (tf.io.write_file)."""
    import tensorflow as tf

    class Module(tf.Module):
        def __init__(self):
            super().__init__()
            self.w = tf.Variable([[2.0]])

        @tf.function(input_signature=[tf.TensorSpec([None, 1], tf.float32, name="x")])
        def serve(self, x):
            tf.io.write_file(marker, "ran")
            return {"y": tf.matmul(x, self.w)}

    module = Module()
    tf.saved_model.save(module, str(out / "write_file_savedmodel"), signatures={"serving_default": module.serve})


def main(out: str, marker: str) -> None:
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    keras3_lambda(out_dir, marker)
    keras3_custom_module(out_dir, marker)
    savedmodel_write_file(out_dir, marker)
    tf_keras_lambda_h5(out_dir, marker)
    if os.path.exists(marker):
        os.unlink(marker)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
