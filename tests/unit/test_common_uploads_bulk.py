"""The multipart receiver's own bound for data-carrying fields (reference clips as data URLs) beside the 64 KiB of
all other fields, and routes that take several file parts."""
import os

from fastapi import Request
from fastapi.testclient import TestClient

from stt_common import BulkField, STTSettings, create_app, receive_upload

REFS = BulkField(names=("known_speaker_references[]", "known_speaker_references"), max_parts=4,
                 max_part_bytes=512 * 1024)
SEEN: list = []


def client():
    settings = STTSettings(max_upload_mb=1.0)
    app, svc = create_app(settings, title="t")

    @svc.api.post("/refs")
    async def refs(request: Request):
        async with receive_upload(request, settings.max_upload_bytes, bulk=[REFS]) as up:
            return {k: [len(v) for v in vs] for k, vs in up.fields.items()}

    @svc.api.post("/clips")
    async def clips(request: Request):
        async with receive_upload(request, settings.max_upload_bytes, max_files=2) as up:
            SEEN.extend(f.path for f in up.files)
            return [{"name": f.filename, "size": f.size, "exists": os.path.exists(f.path)} for f in up.files]

    svc.mount()
    return TestClient(app, raise_server_exceptions=False)


def data_url(n: int) -> str:
    return "data:audio/wav;base64," + "A" * n


def test_two_clips_as_data_urls_fit_where_the_field_budget_would_refuse():
    c = client()
    two = [data_url(300_000)] * 2   # two 3.4 s clips of 44.1 kHz WAV, roughly
    r = c.post("/refs", files={"file": ("a.wav", b"x")},
               data={"known_speaker_names[]": ["A", "B"], "known_speaker_references[]": two})
    assert r.status_code == 200, r.text
    assert r.json()["known_speaker_references[]"] == [300_022, 300_022]
    # the same bytes in any other field: the shared 64 KiB budget still answers 413
    r = c.post("/refs", files={"file": ("a.wav", b"x")}, data={"prompt": "x" * 70_000})
    assert r.status_code == 413 and r.json()["error"]["code"] == "form_too_large"


def test_the_references_own_bound():
    c = client()
    r = c.post("/refs", files={"file": ("a.wav", b"x")},
               data={"known_speaker_references[]": [data_url(10)] * 3, "known_speaker_references": [data_url(10)] * 2})
    assert r.status_code == 400 and r.json()["error"]["code"] == "too_many_fields", r.text
    r = c.post("/refs", files={"file": ("a.wav", b"x")}, data={"known_speaker_references[]": data_url(600_000)})
    assert r.status_code == 413, r.text
    err = r.json()["error"]
    assert err["code"] == "field_too_large" and err["param"] == "known_speaker_references[]"


def test_several_file_parts():
    c = client()
    r = c.post("/clips", files=[("file", ("a.wav", b"abc")), ("file", ("b.wav", b"defg"))])
    assert r.status_code == 200, r.text
    assert [(f["name"], f["size"], f["exists"]) for f in r.json()] == [("a.wav", 3, True), ("b.wav", 4, True)]
    assert SEEN and not any(os.path.exists(p) for p in SEEN)   # every temp file removed after the request
    r = c.post("/clips", files=[("file", ("a.wav", b"a")), ("file", ("b.wav", b"b")), ("file", ("c.wav", b"c"))])
    assert r.status_code == 400 and "At most 2" in r.json()["error"]["message"]
