"""Example models built in code, shared by ``edgec demo``, the tests and the benchmarks.

Nothing is downloaded: models are built here and trained (when at all) on data that an installed package
ships (scikit-learn's digits). torch and TensorFlow load only inside the modules that need them:
``edgec.examples.torch_models`` and ``edgec.examples.keras_models``.
"""

__all__: list[str] = []
