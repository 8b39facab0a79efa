"""INT8 quantization with NNCF: PTQ, QAT (distillation on the quantized model), export stripping."""
from .int8 import calibration_subset, quantize_ptq, quantize_qat, strip_for_export

__all__ = ["calibration_subset", "quantize_ptq", "quantize_qat", "strip_for_export"]
