"""The fruit image generator: deterministic, real JPEGs, both kinds; importable and runnable without torch."""

from __future__ import annotations

import io
import subprocess
import sys

import pytest
from PIL import Image

from adapters.fruit_defect.samples import main, make_image


def test_same_arguments_same_bytes():
    assert make_image("defect", 7) == make_image("defect", 7)
    assert make_image("defect", 7) != make_image("defect", 8)
    assert make_image("clean", 7) != make_image("defect", 7)


@pytest.mark.parametrize("kind", ["clean", "defect"])
def test_a_photo_sized_jpeg(kind):
    image = Image.open(io.BytesIO(make_image(kind, 3)))
    assert image.format == "JPEG" and image.size == (256, 256) and image.mode == "RGB"
    assert Image.open(io.BytesIO(make_image(kind, 3, size=384))).size == (384, 384)


def test_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="kind"):
        make_image("bruised", 1)


def test_cli_writes_both_kinds(tmp_path):
    assert main(["--out", str(tmp_path), "--count", "4", "--first-seed", "10"]) == 0
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["clean-000010.jpg", "clean-000012.jpg", "defect-000011.jpg", "defect-000013.jpg"]


def test_generator_does_not_need_torch(tmp_path):
    code = (
        "import sys; sys.modules['torch'] = None; "  # any torch import would now fail
        "from adapters.fruit_defect.samples import make_image; assert make_image('clean', 1)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
