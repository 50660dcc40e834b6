"""optimize_tensorrt: the exported model as a TensorRT engine in a Triton model repository (GPU)."""
