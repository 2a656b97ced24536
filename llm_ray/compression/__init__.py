"""Post-training compression of a trained Transformer, in place: round-to-nearest quantization and
magnitude pruning (a layer at the level of `training`: it imports torch and the model).

Quantized weights are DEQUANTIZED for the forward pass: the model keeps fp32 tensors whose values are
exactly what the integer codes and their scales represent, so the loss measured is the loss of the
quantized model, while no integer kernel runs (on CPU, for the tiny models of a sweep, none is needed
to measure loss). The size such a model takes in storage is counted by the bytes ledger,
`llm_ray.core.compression.model_bytes`.

    from llm_ray.compression import compress_
    compress_(model, Setting("rtn_group", bits=4, group_size=8))   # model now computes as int4
"""

from llm_ray.compression.apply import compress_
from llm_ray.compression.targets import target_parameters
from llm_ray.compression.prune import SemiStructured24, prune_
from llm_ray.compression.quantize import quantize_dequantize, quantize_

__all__ = ["SemiStructured24", "compress_", "prune_", "quantize_", "quantize_dequantize", "target_parameters"]
