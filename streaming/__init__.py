"""The streaming side: the PyFlink dispatcher, its pure dispatch logic, Kafka helpers, the local stack, the CLI.

Nothing here imports `services/` or torch: the dispatcher talks to the inference service over HTTP only.
"""
