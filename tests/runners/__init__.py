"""Example runners of other shapes than a classifier, served by the real service in the tests
(RUNNER_MODULE=tests.runners.<name>_runner)."""
