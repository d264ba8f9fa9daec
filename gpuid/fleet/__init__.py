"""Fleet signals: GPU identity as metrics, changes of a node's GPUs, GPUs a node is missing."""
