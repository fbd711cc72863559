"""How an int8 model runs, which training's gate must measure exactly as the server serves it: the quantized layers in
int8, the layers quantization leaves out (the stem, the classifier) in bf16 on CPUs with bf16 kernels, else fp32
(ResNet-50, this project's 2-core AVX512-BF16 machine: 4-10 % faster than fp32 there; docs/benchmarks.md)."""

UNQUANTIZED_PRECISION = "bf16"  # asked of OpenVINO as INFERENCE_PRECISION_HINT; CPUs without bf16 fall back to fp32
