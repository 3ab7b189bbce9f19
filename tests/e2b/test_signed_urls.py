"""Signed file URLs (`download_url` / `upload_url`): plain HTTP clients with no access token
reach the file the URL names, as the user it names, and nothing else."""

import httpx


def _client() -> httpx.Client:
    # The same trust settings as the SDK (SSL_CERT_FILE under TLS).
    return httpx.Client(timeout=30)


def test_download_and_upload_urls_work_without_the_token(shared_sandbox):
    sbx = shared_sandbox
    sbx.files.write("/home/user/signed.txt", "signed content")
    with _client() as http:
        down = http.get(sbx.download_url("/home/user/signed.txt"), headers=_routing(sbx))
        assert down.status_code == 200, down.text
        assert down.text == "signed content"

        url = sbx.upload_url("/home/user/uploaded.txt")
        up = http.post(
            url,
            files={"file": ("/home/user/uploaded.txt", b"via signed url")},
            headers=_routing(sbx),
        )
        assert up.status_code == 200, up.text
    assert sbx.files.read("/home/user/uploaded.txt") == "via signed url"
    owner = sbx.commands.run("stat -c %U /home/user/uploaded.txt").stdout.strip()
    assert owner == "user"


def test_a_signature_opens_only_its_own_path_and_expires(shared_sandbox):
    sbx = shared_sandbox
    sbx.files.write("/home/user/a.txt", "a")
    sbx.files.write("/home/user/b.txt", "b")
    good = sbx.download_url("/home/user/a.txt")
    other_path = good.replace("a.txt", "b.txt")
    expired = sbx.download_url("/home/user/a.txt", use_signature_expiration=-60)
    unsigned = good.split("&signature=")[0]
    with _client() as http:
        assert http.get(good, headers=_routing(sbx)).status_code == 200
        # envd's exact answers (E2B's own tests compare the whole body).
        for url, message in (
            (other_path, "invalid signature"),
            (expired, "signature is already expired"),
            (unsigned, "missing signature query parameter"),
        ):
            resp = http.get(url, headers=_routing(sbx))
            assert resp.status_code == 401, (url, resp.status_code, resp.text)
            assert resp.json() == {"code": 401, "message": message}, url
        # A user named in a header (root) cannot change the user the signature names.
        up = http.post(
            sbx.upload_url("/home/user/by-header.txt"),
            files={"file": ("/home/user/by-header.txt", b"x")},
            headers={**_routing(sbx), "Authorization": "Basic cm9vdDo="},
        )
        assert up.status_code == 200, up.text
    owner = sbx.commands.run("stat -c %U /home/user/by-header.txt").stdout.strip()
    assert owner == "user"


def _routing(sbx) -> dict:
    """With E2B_SANDBOX_URL (plain HTTP), URLs point at the one proxy address and the SDK's
    routing headers name the sandbox; a browser would use the sandbox's own host instead."""
    return {"E2b-Sandbox-Id": sbx.sandbox_id, "E2b-Sandbox-Port": "49983"}
