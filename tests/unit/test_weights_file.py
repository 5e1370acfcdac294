"""Weights files are readable by the containers that mount them (the service runs as a user of its own)."""

from __future__ import annotations

import os
import stat

from adapters.fruit_defect.train import _save_atomically


def test_saved_weights_are_readable_by_other_users_as_the_umask_allows(tmp_path):
    previous = os.umask(0o022)
    try:
        dest = tmp_path / "model.ts"
        _save_atomically(lambda tmp: tmp.write_bytes(b"weights"), dest)
    finally:
        os.umask(previous)
    mode = stat.S_IMODE(dest.stat().st_mode)
    assert mode == 0o644, oct(mode)  # mkstemp's 0600 made the compose service fail with "Permission denied"


def test_the_fruit_weights_are_a_state_dict_carrying_their_metadata(fruit_weights):
    import zipfile

    import torch

    from adapters.fruit_defect import WEIGHTS_FORMAT
    from adapters.fruit_defect.train import read_meta

    saved = torch.load(fruit_weights, map_location="cpu", weights_only=True)  # no code runs from the file
    assert saved["format"] == WEIGHTS_FORMAT and "features.0.0.weight" in saved["state_dict"]
    assert not any("/code/" in name for name in zipfile.ZipFile(fruit_weights).namelist())  # not TorchScript
    meta = read_meta(fruit_weights)  # without torch: the trainer's up-to-date check
    assert meta is not None and meta["labels"] == ["clean", "defect"] and meta["input_size"] == [112, 112]


def test_folding_the_batch_norms_into_the_convolutions_keeps_the_outputs(fruit_weights):
    import torch

    from adapters.fruit_defect.model import FruitDefectNet
    from adapters.fruit_defect_runner import FruitRunner

    saved = torch.load(fruit_weights, map_location="cpu", weights_only=True)
    plain = FruitDefectNet()
    plain.load_state_dict(saved["state_dict"])
    folded = FruitRunner(str(fruit_weights)).model
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    x = torch.randn(4, 3, 112, 112, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        assert torch.allclose(folded(x), plain.eval()(x), atol=1e-4)


def test_compose_mounts_the_file_the_fruit_adapter_makes():
    """deploy/teams.yaml (compose, provisioning, the demo) and the adapter's trainer name the same file."""
    from adapters.fruit_defect import DEFAULT_WEIGHTS, WEIGHTS_FILE
    from imagery.repo import WEIGHTS_DIR
    from imagery.teams import team_named

    assert team_named("fruit").weights == WEIGHTS_FILE
    assert DEFAULT_WEIGHTS == WEIGHTS_DIR / WEIGHTS_FILE
