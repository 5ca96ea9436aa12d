"""r1repro: re-run the DeepSeek-R1 recipe and the Dr. GRPO findings, CPU to GPU cluster."""

__version__ = "0.1.0"
