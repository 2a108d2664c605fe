"""A checkpoint's pickle is measured before torch.load builds it: objects repeated by memo
references, deep nesting and damaged opcodes are refused quickly, in bounded memory; every
checkpoint rungefit writes passes."""

from __future__ import annotations

import io
import pickle
import shutil
import struct
import zipfile

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rungefit.runs import pickled

from .helpers import REPO, SPECS, rungefit_capped


def expanded(value) -> tuple[int, int]:
    """(objects, depth) of a plain value with everything it holds expanded, an object held twice
    counted twice: what the pickle's measure must find, computed on the value itself."""
    if isinstance(value, dict):
        children = [part for item in value.items() for part in item]
    elif isinstance(value, (list, tuple, set, frozenset)):
        children = list(value)
    else:
        children = []
    measures = [expanded(child) for child in children]
    return 1 + sum(size for size, _ in measures), 1 + max((depth for _, depth in measures), default=0)


LEAVES = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=False), st.text(max_size=4), st.binary(max_size=4))
VALUES = st.recursive(
    LEAVES,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.lists(inner, max_size=5).map(tuple),
        st.dictionaries(st.text(max_size=3), inner, max_size=3),
        st.frozensets(st.integers(0, 9), max_size=3),
        st.sets(st.integers(0, 9), max_size=3),
        inner.map(lambda shared: [shared, (shared,), {"again": shared}]),  # one object, held three times
    ),
    max_leaves=25,
)


@settings(max_examples=60, deadline=None, database=None)
@given(value=VALUES, protocol=st.sampled_from([4, 5]))
def test_the_measure_of_a_pickle_is_that_of_the_value_expanded(value, protocol):
    data = pickle.dumps(value, protocol=protocol)
    size, depth = expanded(value)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pickled, "MAX_NODES", size)
        patch.setattr(pickled, "MAX_DEPTH", depth)
        pickled.check_pickle(data)  # exactly at both bounds
        patch.setattr(pickled, "MAX_NODES", size - 1)
        with pytest.raises(ValueError, match=f"more than {size - 1} objects"):
            pickled.check_pickle(data)
        patch.setattr(pickled, "MAX_NODES", size)
        patch.setattr(pickled, "MAX_DEPTH", depth - 1)
        with pytest.raises(ValueError, match=f"more than {depth - 1} levels deep"):
            pickled.check_pickle(data)


def holding_itself() -> bytes:
    loop: list = []
    loop.append(loop)
    return pickle.dumps(loop)


@pytest.mark.parametrize(
    "data, problem",
    [
        (b"", "exhausted"),
        (b"\x85.", "takes more from the stack than it put there"),  # TUPLE1 of nothing
        (b"(K\x01e.", "uses an object it never put on the stack"),  # APPENDS with no list below the mark
        (b"h\x05.", "refers to an object it never made"),  # BINGET of an unset memo entry
        (b"K\x01t.", "closes a mark it never opened"),
        (holding_itself(), "holds an object that holds itself"),
    ],
)
def test_a_damaged_pickle_is_refused_saying_why(data, problem):
    with pytest.raises(ValueError, match=problem):
        pickled.check_pickle(data)


def test_a_pickle_of_too_many_opcodes_is_refused_at_the_limit(monkeypatch):
    monkeypatch.setattr(pickled, "MAX_OPCODES", 100)
    pickled.check_pickle(pickle.dumps(list(range(40)), protocol=2))
    with pytest.raises(ValueError, match="more than 100 opcodes"):
        pickled.check_pickle(pickle.dumps(list(range(200)), protocol=2))


def test_every_checkpoint_rungefit_wrote_passes(spec_runs):
    checkpoints = [*(REPO / "tests" / "fixtures").glob("runs-v*/*/model.pt")]
    checkpoints += [runs_dir / name / "model.pt" for runs_dir, name, _ in spec_runs.values()]
    for checkpoint in checkpoints:
        with open(checkpoint, "rb") as handle:
            pickled.check_archive(handle)
    assert len(checkpoints) == 4 + 2 * len(SPECS)


def test_a_checkpoint_that_is_not_torch_saves_archive_is_refused(tmp_path):
    with pytest.raises(ValueError, match="not the zip archive torch.save writes"):
        pickled.check_archive(io.BytesIO(pickle.dumps({"format": 2})))
    empty = io.BytesIO()
    with zipfile.ZipFile(empty, "w") as archive:
        archive.writestr("archive/version", "3\n")
    empty.seek(0)
    with pytest.raises(ValueError, match="holds no data.pkl"):
        pickled.check_archive(empty)


# ---------------------------------------------------------------- hostile checkpoints, end to end


def nested_format(checkpoint: dict, levels: int) -> bytes:
    """The checkpoint with `format` a list [a, a] nested `levels` deep: kilobytes as a pickle."""
    value = [0]
    for _ in range(levels):
        value = [value, value]
    buffer = io.BytesIO()
    torch.save({**checkpoint, "format": value}, buffer)
    return buffer.getvalue()


def deep_tuple_key(checkpoint: dict, levels: int) -> bytes:
    """The checkpoint with an extra key, a tuple (a, a) nested `levels` deep. No dict can be built
    with it here (building it hashes it), so the key is written as opcodes in place of a string's:
    the tuple (0,), then `levels` times a pair of memo references to the tuple before."""
    buffer = io.BytesIO()
    torch.save({**checkpoint, "PLACE-OF-KEY": 1}, buffer)
    placeholder = b"X" + struct.pack("<I", 12) + b"PLACE-OF-KEY"  # BINUNICODE
    memo = [struct.pack("<I", 1_000_000 + level) for level in range(levels + 1)]  # clear of torch.save's own
    key = b"K\x00\x85r" + memo[0] + b"".join(b"j" + memo[i] + b"j" + memo[i] + b"\x86r" + memo[i + 1] for i in range(levels))
    rewritten = io.BytesIO()
    with zipfile.ZipFile(buffer) as archive, zipfile.ZipFile(rewritten, "w") as copy:
        for info in archive.infolist():
            data = archive.read(info)
            copy.writestr(info, data.replace(placeholder, key) if info.filename.endswith("/data.pkl") else data)
    return rewritten.getvalue()


@pytest.mark.parametrize("damage", ["format nested 60 deep", "a tuple key 24 deep"])
def test_a_small_hostile_checkpoint_is_refused_in_one_line_within_a_memory_cap(quick_run, tmp_path, damage):
    _, run_dir, _ = quick_run
    run = tmp_path / "r"
    shutil.copytree(run_dir, run)
    checkpoint = torch.load(run / "model.pt", weights_only=True)
    data = nested_format(checkpoint, 60) if damage.startswith("format") else deep_tuple_key(checkpoint, 24)
    assert len(data) < 64 << 10
    (run / "model.pt").write_bytes(data)
    result = rungefit_capped("eval", "--run", "r", "--runs-dir", str(tmp_path))
    assert result.returncode == 1 and result.stdout == "", result.stderr
    assert result.stderr.strip().splitlines() == [
        f"error: {run / 'model.pt'} is not a readable rungefit checkpoint (its pickle "
        + ("nests objects more than 32 levels deep" if damage.startswith("format") else f"holds an object of more than {pickled.MAX_NODES} objects, counting each repeat")
        + "); retrain with `rungefit train`"
    ]
