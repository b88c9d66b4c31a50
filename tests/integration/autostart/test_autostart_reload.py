"""Config reloads: on file change, on SIGHUP; a bad file is refused and the old config serves."""

import signal
import time

import pytest

from .conftest import wait_for

pytestmark = pytest.mark.docker

M = "docker_autostart_"


def hosts(proxy):
    return set(proxy.health()["services"])


def test_file_change_is_picked_up_and_bad_files_keep_the_last_good_config(make_service, start_proxy):
    a, b = make_service(), make_service()
    proxy = start_proxy([a], poll_interval=0.3)
    assert hosts(proxy) == {a.host}
    assert proxy.get(b.host, "/").status_code == 404

    proxy.write_config([a, b])
    wait_for(lambda: hosts(proxy) == {a.host, b.host}, 10, what="the new service after a file change")
    assert proxy.get(b.host, "/health").status_code == 200  # and it really routes: b starts
    assert b.state() == "running" and a.state() == "missing"

    # broken JSON: refused with a clear line, both services still served
    proxy.config.write_text('{"services": {')
    log = proxy.wait_log("config rejected (file changed)")
    assert "not valid JSON" in log and "keeping the previous config (2 services)" in log
    assert hosts(proxy) == {a.host, b.host}
    assert proxy.health()["config_error"].startswith("not valid JSON")
    assert proxy.get(b.host, "/health").status_code == 200

    # valid JSON, invalid entry: refused as a whole, naming the entry and the key
    b.entry["proxyPort"] = "not-a-port"
    proxy.write_config([a, b])
    wait_for(lambda: proxy.log().count("config rejected") >= 2, 10, what="the second rejection")
    assert f"services['{b.host}']: 'proxyPort' must be a port number" in proxy.log()
    assert proxy.metric(M + "config_reloads_total", result="error") == 2
    assert hosts(proxy) == {a.host, b.host}

    # fixed: accepted; a service dropped from the file is 404 from now on
    proxy.write_config([a], extra={"somethingElse": {"ignored": True}})
    wait_for(lambda: hosts(proxy) == {a.host}, 10, what="the fixed config")
    assert proxy.health()["config_error"] is None
    assert proxy.get(b.host, "/transcribe").status_code == 404
    assert proxy.get(b.host, "/health").json()["status"] == "ok"  # now the proxy's own /health


def test_sighup_reloads(make_service, start_proxy):
    a, b = make_service(), make_service()
    proxy = start_proxy([a], poll_interval=0)  # no file polling: only the signal reloads
    proxy.write_config([a, b])
    time.sleep(1)
    assert hosts(proxy) == {a.host}
    proxy.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: hosts(proxy) == {a.host, b.host}, 10, what="the reload on SIGHUP")
    assert "config loaded (SIGHUP)" in proxy.log()

    proxy.config.write_text("[]")
    proxy.proc.send_signal(signal.SIGHUP)
    proxy.wait_log("config rejected (SIGHUP)")
    assert hosts(proxy) == {a.host, b.host}
    assert proxy.proc.poll() is None
