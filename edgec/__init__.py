"""edgec: compile Keras, PyTorch and ONNX models into verified bundles for edge devices.

Importing ``edgec`` is cheap: torch and TensorFlow load only inside the front-ends that need them.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
