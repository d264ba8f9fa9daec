"""NVIDIA's tools as gpuid uses them: the command lines it runs, and pure parsers of what they print."""
