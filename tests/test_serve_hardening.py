"""Holes a review found in the serving code, each with the hostile request that opened it (issue 26): malformed
headers and bodies that used to be 500s with the exception's text, a bad request failing its neighbours in a
multi-model batch, and what an unexpected error tells a client."""

import io
import json

import pytest
from PIL import Image
from test_serve import ready_client, settings_for

from serve.http_common import RequestError
from serve.pipeline import RequestContext, Transformer


@pytest.fixture(scope="module")
def client(trained_run):
    client = ready_client(settings_for(trained_run[0] / "model"))
    yield client
    client.__exit__(None, None, None)


@pytest.fixture(scope="module")
def png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (40, 40), (200, 30, 30)).save(buffer, "PNG")
    return buffer.getvalue()


def assert_400(response) -> str:
    """The error's text, once checked: a 400 in our JSON shape (the Open Inference Protocol's is ``{"error"}``
    alone)."""
    assert response.status_code == 400 and response.headers["content-type"] == "application/json", response.text
    body = response.json()
    assert set(body) in ({"error", "detail"}, {"error"}), body
    text = " ".join(body.values())
    assert "Traceback" not in text and "0x" not in text
    return text


@pytest.mark.parametrize(
    "length", [b"\xb2", "\u0663".encode("latin-1", "replace"), b"9" * 4301, b"1" * 5000, b" ", b"-3", b"1e3"]
)
def test_a_malformed_inference_header_length_is_a_400(client, png, length):
    """``'²'.isdigit()`` is true and ``int('²')`` fails; more than 4,300 digits exceed Python's int conversion."""
    header = json.dumps(
        {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": len(png)}}]}
    ).encode()
    response = client.post(
        "/v2/models/model/infer",
        content=header + png,
        headers={"Inference-Header-Content-Length": length, "Content-Type": "application/octet-stream"},
    )
    assert "Inference-Header-Content-Length" in assert_400(response)


@pytest.mark.parametrize("route", ["/invocations", "/v2/models/model/infer"])
def test_json_with_an_integer_of_over_4300_digits_is_a_400(client, route):
    body = (
        b'{"instances": [' + b"7" * 5000 + b"]}"
        if route == "/invocations"
        else b'{"inputs": [{"name": "image", "shape": [' + b"7" * 5000 + b"]}]}"
    )
    assert "number Python refuses to convert" in assert_400(
        client.post(route, content=body, headers={"Content-Type": "application/json"})
    )


@pytest.mark.parametrize(
    "disposition",
    [
        b"form-data; name=\"file\"; filename*=UTF-8''photo.png",
        b"form-data; name=\"file\"; filename*=idna''abc",
        b"form-data; name=\"file\"; filename*=UTF-8''%FF%FE",
        b"form-data; name=\"file\"; filename*0*=UTF-8''a; filename*1=b",
        b"form-data; name=\"file\"; filename*=\xff''\xfe",
        b'form-data; name="file"; filename*=',
    ],
)
def test_multipart_parts_with_filename_star_are_answered_never_a_500(client, png, disposition):
    """RFC 2231's ``filename*`` is a legal way to name the file: a readable one is served, any other a 400."""
    body = (
        b"--B\r\nContent-Disposition: " + disposition + b"\r\nContent-Type: image/png\r\n\r\n" + png + b"\r\n--B--\r\n"
    )
    response = client.post("/invocations", content=body, headers={"Content-Type": "multipart/form-data; boundary=B"})
    if response.status_code != 200:
        assert_400(response)


def test_an_unexpected_error_is_a_generic_500_with_a_request_id(client, png, caplog, monkeypatch):
    """The exception's text (here a path and a memory address) goes to the log once, under the id the client gets."""
    transformer = client.app.state.model.pipeline.transformer

    def broken(*_args):
        raise RuntimeError("cannot open /opt/ml/model/secret.bin at <object at 0x7f00deadbeef>")

    monkeypatch.setattr(transformer, "encode", broken)
    response = client.post("/invocations", content=png, headers={"Content-Type": "image/png"})
    assert response.status_code == 500 and response.json()["error"] == "internal error"
    request_id = response.headers["x-request-id"]
    assert request_id in response.json()["detail"] and "secret" not in response.text and "0x" not in response.text
    logged = [r for r in caplog.records if request_id in r.getMessage()]
    assert len(logged) == 1 and logged[0].exc_info and "secret.bin" in caplog.text


def test_one_bad_request_never_fails_its_neighbours_in_a_multi_model_batch(trained_run, png, monkeypatch):
    """multi-model-server hands a batch of requests at once: a request whose decoding raises something unexpected
    gets its own 500, and the good requests of the same batch their answers."""
    transformer = Transformer(settings_for(trained_run[0] / "model"))
    decode = transformer.decode

    def decode_or_crash(body, ctx):
        if body == b"crash":
            raise KeyError("an exception no step expected")
        return decode(body, ctx)

    monkeypatch.setattr(transformer, "decode", decode_or_crash)
    requests = [
        (png, RequestContext.from_headers({"content-type": "image/png", "accept": "application/json"}, 60))
        for _ in range(3)
    ]
    requests.insert(1, (b"crash", RequestContext.from_headers({"content-type": "image/png"}, 60)))
    requests.insert(3, (b"not an image", RequestContext.from_headers({"content-type": "image/png"}, 60)))
    outcomes = transformer.transform_batch(requests)
    assert [o.status if isinstance(o, RequestError) else 200 for o in outcomes] == [200, 500, 200, 400, 200]
    assert outcomes[1].error == "internal error" and "no step expected" not in outcomes[1].detail
    answers = {o[0] for o in outcomes if not isinstance(o, RequestError)}
    assert len(answers) == 1 and json.loads(answers.pop())["predictions"][0]["label"]  # the same image, the same answer
