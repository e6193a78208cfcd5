"""The compiler: front-ends lower a source model to the ONNX IR, passes optimise it for a target profile,
emitters write the bundle. Imports torch/TensorFlow only inside the front-ends and emitters that need them."""

__all__: list[str] = []
