"""Character-LoRA dataset builder: donor photos + a new face -> a kohya sd-scripts training set."""

__version__ = "0.1.0"
