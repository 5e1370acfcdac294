"""The service's settings: which buckets a team's service may read."""

from __future__ import annotations

from services.inference_http.settings import ServiceSettings


def test_by_default_a_team_reads_its_own_buckets_only():
    settings = ServiceSettings(team="fruit")
    assert settings.bucket_allowed("fruit") and settings.bucket_allowed("fruit-hot")
    assert not settings.bucket_allowed("fruitcake") and not settings.bucket_allowed("orchard-fruit-hot")


def test_a_team_name_with_an_underscore_owns_the_buckets_spelled_with_a_dash():
    assert ServiceSettings(team="cold_chain").bucket_allowed("cold-chain-cam1")


def test_allowed_buckets_replaces_the_default_with_names_and_globs():
    settings = ServiceSettings(team="fruit", allowed_buckets="imagery-hot, shared-*")
    assert settings.bucket_allowed("imagery-hot") and settings.bucket_allowed("shared-2026")
    assert not settings.bucket_allowed("fruit-hot")
    assert ServiceSettings(team="fruit", allowed_buckets="*").bucket_allowed("anything-at-all")
