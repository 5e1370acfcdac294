"""POST /infer_upload's form parser (services/inference_http/upload.py) is the HTTP front's work: it must parse a
form without loading torch (a front of a multi-process service has no model; torch costs seconds and hundreds of MB
to import)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from imagery.repo import REPO_ROOT


def test_parsing_an_upload_does_not_import_torch():
    code = textwrap.dedent("""
        import sys
        from services.inference_http.upload import FILE_FIELD, parse_upload

        boundary = "b0undary"
        body = (f"--{boundary}\\r\\nContent-Disposition: form-data; name={FILE_FIELD}; filename=a.jpg\\r\\n"
                f"Content-Type: image/jpeg\\r\\n\\r\\n").encode() + b"\\xff\\xd8jpeg\\xff\\xd9" + (
                f"\\r\\n--{boundary}\\r\\nContent-Disposition: form-data; name=model_tag\\r\\n\\r\\nv2\\r\\n"
                f"--{boundary}--\\r\\n").encode()
        upload = parse_upload(f"multipart/form-data; boundary={boundary}", body)
        assert (upload.data, upload.filename, upload.model_tag) == (b"\\xff\\xd8jpeg\\xff\\xd9", "a.jpg", "v2"), upload
        loaded = sorted(name for name in sys.modules if name == "torch" or name.startswith("torch."))
        assert not loaded, loaded
    """)
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
