"""What a user checks on any answer of the services, whatever they sent: never a 5xx, and every error in
OpenAI's shape ({"error": {"message", "type", "param", "code"}}). Used by both services' property tests."""


def check_answer(case, key: str, timeout: float = 60) -> None:
    """Send a Schemathesis case with the API key and check the answer."""
    r = case.call(headers={"Authorization": f"Bearer {key}"}, timeout=timeout)
    assert r.status_code < 500, (case.method, case.path, r.status_code, r.text[:300])
    if r.status_code >= 400:
        body = r.json()
        assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
