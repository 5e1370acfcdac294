"""The pure parts of the job's operator: a group as SQL hands it over, and as the operator keeps it in state."""

from __future__ import annotations

import datetime as dt
import pickle

import pytest

from streaming.dispatch.config import DispatcherConfig
from streaming.dispatch.records import KafkaInput
from streaming.flink import tables
from streaming.flink.operators import decode_group, encode_group, group_inputs


def test_a_group_of_field_arrays_becomes_its_records_in_order_with_null_keys_kept():
    ts = dt.datetime(2026, 12, 7, tzinfo=dt.UTC)
    columns = (
        [b"k0", None, b"k2"],
        [b"v0", b"v1", None],
        ["t", "t", "t"],
        [10, 11, 12],
        [ts, ts, None],
        [{"h": b"1"}, None, {}],
    )
    records = group_inputs(3, columns)
    assert [r.offset for r in records] == [10, 11, 12]
    assert [r.key for r in records] == [b"k0", None, b"k2"] and [r.value for r in records] == [b"v0", b"v1", None]
    assert {r.partition for r in records} == {3} and records[0].headers == {"h": b"1"} and records[1].headers == {}
    assert records[0].timestamp_ms == int(ts.timestamp() * 1000) and records[2].timestamp_ms is None


def test_arrays_of_unequal_length_are_refused_not_silently_cut():
    with pytest.raises(ValueError):
        group_inputs(0, ([b"k"], [b"v", b"w"], ["t"], [1], [None], [None]))


def test_a_group_kept_in_state_comes_back_equal():
    group = [
        KafkaInput(
            value=b"v",
            key=None,
            topic="imagery.new.fruit",
            partition=2,
            offset=7,
            timestamp_ms=5,
            headers={"x-replay-of": b"a-0-1"},
        ),
        KafkaInput(value=None, key=b"k", topic="imagery.new.fruit", partition=2, offset=8),
    ]
    entry = encode_group(group)
    assert decode_group(pickle.loads(pickle.dumps(entry))) == group
    assert b"KafkaInput" not in pickle.dumps(entry)  # builtin tuples, not the class's pickle


def test_the_group_query_aggregates_every_field_it_hands_over():
    sql = tables.grouped_records(DispatcherConfig(team="fruit", group_wait_ms=10, group_size=64))
    for name in tables.GROUP_FIELDS:
        assert f"ARRAY_AGG(`{name}`)" in sql
    assert "INTERVAL '0.010' SECOND" in sql and "`offset` / 64" in sql
