"""`imagery provision` (compose's `init`): its arguments, and the weights check that stops `up` with a clear message."""

from __future__ import annotations

import pytest

from imagery.provision import ProvisionError, check_weights
from imagery.teams import Team, TeamSpecError


def test_a_team_spec_names_its_bucket_and_minio_events_target():
    spec = Team.from_spec("orchard_west:6:orchard_west_best.pt")
    assert (spec.team, spec.partitions, spec.weights) == ("orchard_west", 6, "orchard_west_best.pt")
    assert spec.bucket == "orchard-west"
    assert spec.events_target == "arn:minio:sqs::ORCHARD_WEST:kafka"  # compose.yaml's MINIO_NOTIFY_KAFKA_*_ORCHARD_WEST


@pytest.mark.parametrize("bad", ["fruit", "fruit:four:w.ts", "fruit:4"])
def test_a_malformed_team_spec_is_refused(bad):
    with pytest.raises(TeamSpecError, match="TEAM:PARTITIONS:WEIGHTS_FILE"):
        Team.from_spec(bad)


def test_missing_weights_are_named_with_how_to_make_them(tmp_path):
    (tmp_path / "fruit_cls_best.ts").write_bytes(b"w")
    teams = [Team.from_spec("fruit:4:fruit_cls_best.ts"), Team.from_spec("apples:4:apples_best.pt")]
    with pytest.raises(ProvisionError) as err:
        check_weights(tmp_path, teams)
    assert "weights/apples_best.pt (team apples)" in str(err.value) and "fruit_cls_best" not in str(err.value)
    (tmp_path / "apples_best.pt").write_bytes(b"w")
    check_weights(tmp_path, teams)
