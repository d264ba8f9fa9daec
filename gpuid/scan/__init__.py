"""From pod events to GPU records: what to scan, where nvidia-smi answers, and a leader's progress."""
