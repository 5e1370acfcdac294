"""Example runners of other shapes than the seed's classifier, served by the real service in the tests
(RUNNER_MODULE=tests.runners.<name>_runner)."""
