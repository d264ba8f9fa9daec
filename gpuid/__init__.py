"""gpuid: the physical identity of every NVIDIA GPU in a Kubernetes fleet."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("gpuid")  # pyproject.toml's, the one place the version is written
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"
