"""nvidia-bug-report.sh archives from driver pods: on request, on failure, on a schedule, or for an API."""
