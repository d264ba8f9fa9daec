"""gpuid: the physical identity of every NVIDIA GPU in a Kubernetes fleet."""

__version__ = "0.1.0"
