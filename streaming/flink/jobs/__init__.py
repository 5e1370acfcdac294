"""The Flink jobs this image runs; `JOB_FILE` is the one path the keeper, the local runner and the docs submit."""

from pathlib import Path

JOB_FILE = Path(__file__).with_name("http_dispatcher.py")
