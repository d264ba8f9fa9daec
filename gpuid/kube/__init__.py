"""Everything gpuid knows about talking to Kubernetes: clients, list/watch, exec, pods and nodes."""
