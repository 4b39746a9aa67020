"""Phone pairing: LAN address detection and ranking, pairing URLs, the start-up banner
(its QR code decoded by a real decoder), the /pair page and who may see it.

No test touches the network: address ranking runs on synthetic interface lists, and
the real interface listing runs with every packet-sending socket call disabled.
"""
import ipaddress
import os
import time
import re
import socket
import sys
import urllib.parse

import pytest
import zxingcpp
from PIL import Image

import chatserver as cs

TOKEN = "Zq3vK9dX2mPw7Lr8sT4yB6"      # secrets.token_urlsafe(16) has 22 characters


# -- ranking synthetic interface lists ----------------------------------------------

@pytest.mark.parametrize("interfaces, expected", [
    # Tailscale (CGNAT) listed first, WiFi second: the WiFi address wins.
    ([("tailscale0", "100.101.102.103"), ("wlan0", "192.168.1.23")],
     ["192.168.1.23", "100.101.102.103"]),
    # Windows names: the Hyper-V / WSL switch (172.x) after the real Ethernet adapter.
    ([("vEthernet (WSL)", "172.25.48.1"), ("vEthernet (Default Switch)", "172.29.160.1"),
      ("Ethernet", "192.168.0.12")],
     ["192.168.0.12", "172.25.48.1", "172.29.160.1"]),
    # Docker bridge listed before the WiFi adapter.
    ([("lo", "127.0.0.1"), ("docker0", "172.17.0.1"), ("wlan0", "10.0.0.7")],
     ["10.0.0.7", "172.17.0.1"]),
    # Windows getaddrinfo fallback: no names. VirtualBox host-only goes last.
    ([(None, "192.168.56.1"), (None, "192.168.1.40")], ["192.168.1.40", "192.168.56.1"]),
    # No names: Docker's default bridge range after a 172.16/12 one, which is after 192.168.
    ([(None, "172.17.0.1"), (None, "172.20.1.2"), (None, "192.168.2.2")],
     ["192.168.2.2", "172.20.1.2", "172.17.0.1"]),
    # VPN tunnels with private addresses still lose to the physical adapter.
    ([("tun0", "10.8.0.2"), ("wg0", "10.66.66.2"), ("en0", "192.168.178.30")],
     ["192.168.178.30", "10.8.0.2", "10.66.66.2"]),
    # Public and CGNAT addresses: CGNAT (often a VPN) before public, private first.
    ([("eth1", "203.0.113.9"), ("eth2", "100.64.0.5"), ("eth0", "172.16.5.5")],
     ["172.16.5.5", "100.64.0.5", "203.0.113.9"]),
    # Recognised physical names beat unknown names at the same address class.
    ([("foo0", "192.168.1.2"), ("wlp2s0", "192.168.1.3"), ("Wi-Fi", "10.1.1.1")],
     ["192.168.1.3", "10.1.1.1", "192.168.1.2"]),
    # br0 (a real bridge carrying the LAN) is not br-<docker id>.
    ([("br-3f2a9c", "172.18.0.1"), ("br0", "192.168.1.9")], ["192.168.1.9", "172.18.0.1"]),
    # Equal rank: the system's order is kept.
    ([("eth0", "192.168.1.5"), ("eth1", "192.168.7.5"), ("eth2", "10.0.0.5")],
     ["192.168.1.5", "192.168.7.5", "10.0.0.5"]),
    # Duplicates (an address seen on two names) appear once, at the best rank.
    ([("docker0", "192.168.1.5"), ("eth0", "192.168.1.5"), (None, "192.168.1.5"),
      ("eth0", "10.0.0.1")],
     ["192.168.1.5", "10.0.0.1"]),
    # Only loopback.
    ([("lo", "127.0.0.1"), ("lo:1", "127.0.1.1")], []),
    # Link-local only (no DHCP answer), unspecified, multicast, broadcast.
    ([("eth0", "169.254.10.20"), (None, "0.0.0.0"), (None, "224.0.0.251"),
      (None, "255.255.255.255")], []),
    # Garbage and IPv6 are ignored, not fatal.
    ([("eth0", "not an ip"), ("eth0", "fe80::1"), ("eth0", "2001:db8::5"), ("eth1", "")], []),
    ([], []),
])
def test_rank_lan_addresses(interfaces, expected):
    assert cs.rank_lan_addresses(interfaces) == expected


def test_rank_does_not_modify_its_input():
    interfaces = [("docker0", "172.17.0.1"), ("eth0", "192.168.1.5")]
    snapshot = list(interfaces)
    cs.rank_lan_addresses(interfaces)
    assert interfaces == snapshot


@pytest.mark.parametrize("name", [
    "docker0", "br-0a1b2c", "veth12ab", "virbr0", "vmnet8", "vboxnet0",
    "VirtualBox Host-Only Network", "Hyper-V Virtual Ethernet Adapter", "vEthernet (WSL)",
    "tun0", "tap0", "wg0", "tailscale0", "zt5u4y6abc", "utun3", "ham0", "lxcbr0", "lxdbr0",
    "podman0", "cni0", "flannel.1", "kube-bridge", "VMware Network Adapter VMnet1",
])
def test_virtual_adapters_lose_to_an_unknown_name_with_a_worse_address(name):
    # Even a public address on an unrecognised adapter beats a virtual adapter.
    assert cs.rank_lan_addresses([(name, "192.168.1.1"), ("mystery", "198.51.100.7")]) == \
        ["198.51.100.7", "192.168.1.1"]


# -- listing the real interfaces, sending nothing -------------------------------------

def _assert_interface_list(found):
    assert isinstance(found, list)
    for entry in found:
        assert isinstance(entry, tuple) and len(entry) == 2
        name, ip = entry
        assert name is None or (isinstance(name, str) and name)
        assert ipaddress.ip_address(ip).version == 4


def test_list_ipv4_interfaces_returns_names_and_addresses():
    found = cs.list_ipv4_interfaces()
    _assert_interface_list(found)
    if sys.platform.startswith("linux"):
        # Every Linux box has the loopback interface with 127.0.0.1 (or another 127/8).
        assert any(ipaddress.ip_address(ip).is_loopback for _, ip in found)
        assert all(name for name, _ in found)


def test_list_ipv4_interfaces_sends_no_packet(monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("interface detection must not send anything")

    for method in ("connect", "connect_ex", "sendto", "send", "sendall", "sendmsg"):
        monkeypatch.setattr(socket.socket, method, no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    if not cs.IS_WINDOWS:
        # Off Windows, resolving the own host name may ask a DNS server: not used there.
        monkeypatch.setattr(socket, "getaddrinfo", no_network)
        monkeypatch.setattr(socket, "gethostbyname", no_network)
        monkeypatch.setattr(socket, "gethostbyname_ex", no_network)
    found = cs.list_ipv4_interfaces()
    _assert_interface_list(found)
    if sys.platform.startswith("linux"):
        assert found, "the ioctl path works without any packet"


def test_list_ipv4_interfaces_never_raises(monkeypatch):
    def broken(*args, **kwargs):
        raise OSError("no interfaces today")

    monkeypatch.setattr(socket, "if_nameindex", broken, raising=False)
    monkeypatch.setattr(socket, "getaddrinfo", broken)
    assert cs.list_ipv4_interfaces() == []


def test_windows_fallback_resolves_the_own_host_name(monkeypatch):
    calls = []

    def fake_getaddrinfo(host, port, family=0, *rest):
        calls.append((host, port, family))
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("192.168.1.50", 0)),
                (socket.AF_INET, socket.SOCK_DGRAM, 17, "", ("192.168.1.50", 0)),
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("172.22.80.1", 0))]

    monkeypatch.setattr(cs, "IS_WINDOWS", True)
    monkeypatch.setattr(cs, "_ipv4_by_ioctl", lambda: [])
    monkeypatch.setattr(socket, "gethostname", lambda: "DESKTOP-PC")
    monkeypatch.setattr(socket, "getaddrinfo", fake_getaddrinfo)
    assert cs.list_ipv4_interfaces() == [(None, "192.168.1.50"), (None, "172.22.80.1")]
    assert calls == [("DESKTOP-PC", None, socket.AF_INET)]


# -- pairing URLs ---------------------------------------------------------------------

def _before_fragment(url):
    return url.split("#", 1)[0]


def test_pairing_url_puts_the_token_in_the_fragment_only():
    url = cs.pairing_url("192.168.1.20", 5555, TOKEN)
    assert url == "http://192.168.1.20:5555/#k=" + TOKEN
    assert TOKEN not in _before_fragment(url)
    parts = urllib.parse.urlsplit(url)
    assert (parts.path, parts.query, parts.fragment) == ("/", "", "k=" + TOKEN)


def test_pairing_url_open_mode_has_no_fragment():
    assert cs.pairing_url("10.0.0.2", 8080, None) == "http://10.0.0.2:8080/"


def test_pairing_url_brackets_ipv6():
    assert cs.pairing_url("fd00::12", 5555, TOKEN) == "http://[fd00::12]:5555/#k=" + TOKEN
    assert cs.pairing_url("fe80::1%eth0", 5555, None) == "http://[fe80::1%25eth0]:5555/"
    parts = urllib.parse.urlsplit(cs.pairing_url("fd00::12", 5555, TOKEN))
    assert (parts.hostname, parts.port) == ("fd00::12", 5555)


WIFI_AND_DOCKER = [("lo", "127.0.0.1"), ("docker0", "172.17.0.1"), ("wlan0", "192.168.1.20")]


def test_pairing_urls_for_a_wildcard_bind_rank_the_lan_addresses():
    assert cs.pairing_urls("0.0.0.0", 5555, TOKEN, interfaces=WIFI_AND_DOCKER) == [
        "http://192.168.1.20:5555/#k=" + TOKEN, "http://172.17.0.1:5555/#k=" + TOKEN]


def test_pairing_urls_for_a_specific_bind_use_it_alone():
    assert cs.pairing_urls("10.1.2.3", 5555, None, interfaces=WIFI_AND_DOCKER) == \
        ["http://10.1.2.3:5555/"]
    assert cs.pairing_urls("127.0.0.1", 5555, None, interfaces=WIFI_AND_DOCKER) == \
        ["http://127.0.0.1:5555/"]


def test_advertise_host_comes_first_then_the_detected_ones():
    urls = cs.pairing_urls("0.0.0.0", 5555, TOKEN, advertise_host="chat.lan",
                           interfaces=WIFI_AND_DOCKER)
    assert urls == ["http://chat.lan:5555/#k=" + TOKEN, "http://192.168.1.20:5555/#k=" + TOKEN,
                    "http://172.17.0.1:5555/#k=" + TOKEN]
    # Advertising a detected address moves it first without repeating it.
    urls = cs.pairing_urls("0.0.0.0", 5555, None, advertise_host="172.17.0.1",
                           interfaces=WIFI_AND_DOCKER)
    assert urls == ["http://172.17.0.1:5555/", "http://192.168.1.20:5555/"]


def test_no_lan_address_falls_back_to_loopback():
    only_loopback = [("lo", "127.0.0.1"), ("eth0", "169.254.3.4")]
    assert cs.pairing_urls("0.0.0.0", 5555, TOKEN, interfaces=only_loopback) == \
        ["http://127.0.0.1:5555/#k=" + TOKEN]
    assert cs.pairing_urls("", 5555, None, interfaces=[]) == ["http://127.0.0.1:5555/"]


def test_pairing_urls_detects_interfaces_by_default(monkeypatch):
    monkeypatch.setattr(cs, "list_ipv4_interfaces", lambda: [("eth0", "10.9.8.7")])
    assert cs.pairing_urls("0.0.0.0", 5555, None) == ["http://10.9.8.7:5555/"]


@pytest.mark.parametrize("host, lan", [
    ("0.0.0.0", True), ("", True), ("::", True), ("192.168.1.4", True), ("fd00::1", True),
    ("127.0.0.1", False), ("127.0.1.1", False), ("::1", False), ("localhost", False),
])
def test_listens_on_lan(host, lan):
    assert cs.listens_on_lan(host) is lan


# -- the banner: its QR code decodes to the pairing URL -------------------------------

_LIGHT_HALVES = {"\u2588": (True, True), "\u2580": (True, False),
                 "\u2584": (False, True), " ": (False, False)}


def _qr_lines(banner, ascii_only):
    """The QR code's lines: they start with the light quiet zone, printed as ink."""
    ink = "##" if ascii_only else "\u2588\u2588"
    lines = [line for line in banner.split("\n") if line.startswith(ink)]
    assert lines, "a QR code in the banner"
    first = banner.split("\n").index(lines[0])
    assert banner.split("\n")[first:first + len(lines)] == lines, "one contiguous block"
    return lines


def _banner_to_dark_rows(banner, ascii_only):
    """Module matrix (True = dark), quiet zone included, read back from the text."""
    lines = _qr_lines(banner, ascii_only)
    assert len({len(line) for line in lines}) == 1, "a rectangle of text"
    rows = []
    if ascii_only:
        for line in lines:
            cells = [line[i:i + 2] for i in range(0, len(line), 2)]
            assert set(cells) <= {"##", "  "}
            rows.append([cell == "  " for cell in cells])
        assert len(rows) == len(rows[0]), "square"
        return rows
    for line in lines:
        halves = [_LIGHT_HALVES[ch] for ch in line]
        rows.append([not top for top, _ in halves])
        rows.append([not bottom for _, bottom in halves])
    width = len(rows[0])
    if len(rows) > width:   # odd module count: the last half-row is light padding
        assert len(rows) == width + 1 and not any(rows[width])
    return rows[:width]


def _decode(dark_rows, pixels_per_module=6):
    side = len(dark_rows)
    image = Image.new("L", (side, side))
    image.putdata([0 if dark else 255 for row in dark_rows for dark in row])
    image = image.resize((side * pixels_per_module,) * 2, Image.NEAREST)
    results = zxingcpp.read_barcodes(image, formats=zxingcpp.BarcodeFormat.QRCode,
                                     try_invert=False)
    assert len(results) == 1, "exactly one QR code found"
    return results[0]


URLS = ["http://192.168.1.20:5555/#k=" + TOKEN, "http://172.17.0.1:5555/#k=" + TOKEN]


@pytest.mark.parametrize("encoding_ok", [True, False])
def test_banner_qr_decodes_to_the_best_url(encoding_ok):
    banner = cs.pairing_banner(URLS, TOKEN, 5555, encoding_ok, False, True)
    if not encoding_ok:
        assert banner.isascii()
    result = _decode(_banner_to_dark_rows(banner, ascii_only=not encoding_ok))
    assert result.text == URLS[0]
    assert result.ec_level == cs.PAIRING_QR_EC == "M"


@pytest.mark.parametrize("encoding_ok", [True, False])
def test_banner_qr_of_an_open_server_decodes(encoding_ok):
    urls = ["http://10.0.0.2:5555/"]
    banner = cs.pairing_banner(urls, None, 5555, encoding_ok, True, True)
    assert _decode(_banner_to_dark_rows(banner, ascii_only=not encoding_ok)).text == urls[0]
    assert "Open mode" in banner


@pytest.mark.parametrize("encoding_ok", [True, False])
def test_banner_qr_fits_an_80_column_console(encoding_ok):
    # The longest IPv4 URL with a 22-character token: 54 bytes, still version 4-M.
    longest = "http://255.255.255.255:65535/#k=" + TOKEN
    banner = cs.pairing_banner([longest], TOKEN, 65535, encoding_ok, True, True)
    lines = _qr_lines(banner, ascii_only=not encoding_ok)
    assert max(len(line) for line in banner.split("\n")) <= cs.CONSOLE_COLUMNS
    if encoding_ok:
        assert len(lines) <= 21 and len(lines[0]) == 41    # 33 modules + 2 x 4 quiet
    else:
        assert len(lines[0]) == 78                          # 33 + 2 x 3 quiet, "##" each
    assert _decode(_banner_to_dark_rows(banner, not encoding_ok)).text == longest


def test_banner_lists_the_best_url_first_then_the_others():
    banner = cs.pairing_banner(URLS, TOKEN, 5555, True, False, True)
    lines = banner.split("\n")
    assert lines.index("  " + URLS[0]) < lines.index("  also: " + URLS[1]) < \
        lines.index(_qr_lines(banner, False)[0])


def test_banner_mentions_the_firewall_script_on_windows_lan_only():
    windows_lan = cs.pairing_banner(URLS, TOKEN, 5555, True, True, True)
    assert "right-click firewall.ps1 > Run with PowerShell" in windows_lan
    assert "port 5555" in windows_lan
    assert "firewall.ps1" not in cs.pairing_banner(URLS, TOKEN, 5555, True, False, True)
    loopback = ["http://127.0.0.1:5555/#k=" + TOKEN]
    assert "firewall.ps1" not in cs.pairing_banner(loopback, TOKEN, 5555, True, True, False)


def test_banner_firewall_hint_for_another_port_passes_it():
    banner = cs.pairing_banner(["http://192.168.1.2:6000/"], None, 6000, True, True, True)
    assert "-File .\\firewall.ps1 -Port 6000" in banner
    assert "right-click" not in banner


def test_banner_common_advice():
    banner = cs.pairing_banner(URLS, TOKEN, 5555, True, False, True)
    assert "same WiFi" in banner.replace("Same WiFi", "same WiFi")
    assert "guest network" in banner
    assert "--advertise-host" in banner
    assert "http://127.0.0.1:5555/pair" in banner


def test_banner_says_when_phones_cannot_connect():
    loopback = ["http://127.0.0.1:5555/"]
    no_lan = cs.pairing_banner(loopback, None, 5555, True, False, True)
    assert "No network address found" in no_lan
    local_only = cs.pairing_banner(loopback, None, 5555, True, False, False)
    assert "--host 0.0.0.0" in local_only and "No network address found" not in local_only
    assert "No network address found" not in cs.pairing_banner(URLS, TOKEN, 5555, True, False, True)


# -- the /pair page -----------------------------------------------------------------

def test_pair_page_shows_the_qr_and_the_escaped_url():
    url = URLS[0]
    svg = cs.qr_render_svg(cs.qr_encode(url, cs.PAIRING_QR_EC))
    page = cs.pair_page_html(url, svg).decode("utf-8")
    assert page.startswith("<!doctype html>")
    assert "<svg" in page and "<?xml" not in page   # a declaration is invalid inside HTML
    assert svg[svg.index("<svg"):] in page
    assert url in page                                # nothing in it needs escaping
    assert "prefers-color-scheme: dark" in page
    # No external resource: no URL other than the pairing one, no script.
    assert set(re.findall(r"https?://[^\s\"<]+", page)) <= {url, "http://www.w3.org/2000/svg"}
    assert "<script" not in page and " src=" not in page and "<link" not in page


def test_pair_page_escapes_the_url():
    url = 'http://x/<script>alert("k")</script>&'
    page = cs.pair_page_html(url, "<svg></svg>").decode("utf-8")
    assert "<script>" not in page
    assert "&lt;script&gt;alert(&quot;k&quot;)&lt;/script&gt;&amp;" in page


# -- who may see it -----------------------------------------------------------------

@pytest.mark.parametrize("peer", [
    ("127.0.0.1", 5), ("127.8.9.1", 5), ("::1", 5, 0, 0), ("::ffff:127.0.0.1", 5, 0, 0),
])
def test_loopback_peers(peer):
    assert cs.is_loopback_peer(peer) is True


@pytest.mark.parametrize("peer", [
    ("192.168.1.5", 5), ("10.0.0.1", 5), ("::ffff:192.168.1.5", 5, 0, 0), ("fe80::1", 5, 0, 0),
    ("0.0.0.0", 5), ("::", 5, 0, 0), None, (), ("", 0), ("localhost", 5), "127.0.0.1",
])
def test_other_peers(peer):
    assert cs.is_loopback_peer(peer) is False


def test_loopback_peer_from_a_real_socket():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        with socket.create_connection(listener.getsockname()):
            accepted, peer = listener.accept()
            accepted.close()
    assert cs.is_loopback_peer(peer) is True


# -- opening the browser at start ----------------------------------------------------

@pytest.mark.parametrize("frozen, windows, no_browser, expected", [
    (True, True, False, True),
    (True, True, True, False),
    (False, True, False, False),
    (True, False, False, False),
    (False, False, False, False),
])
def test_should_open_browser(monkeypatch, frozen, windows, no_browser, expected):
    if frozen:
        monkeypatch.setattr(sys, "frozen", True, raising=False)
    else:
        monkeypatch.delattr(sys, "frozen", raising=False)
    monkeypatch.setattr(cs, "IS_WINDOWS", windows)
    assert cs.should_open_browser(no_browser) is expected


def test_open_pair_page_opens_the_local_page(monkeypatch):
    import webbrowser
    opened = []
    monkeypatch.setattr(webbrowser, "open", lambda url: opened.append(url) or True)
    assert cs.open_pair_page(5555) is True
    assert opened == ["http://127.0.0.1:5555/pair"]


def test_open_pair_page_survives_a_broken_browser(monkeypatch):
    import webbrowser

    def broken(url):
        raise webbrowser.Error("could not locate runnable browser")

    monkeypatch.setattr(webbrowser, "open", broken)
    assert cs.open_pair_page(5555) is False


# -- the token on a real server ---------------------------------------------------------

def _stored_token(data_dir):
    """The token in a stopped server's database (a running server holds the lock)."""
    store = cs.MessageStore(os.path.join(str(data_dir), "chat.sqlite3"))
    try:
        return store.get_setting("pairing_token")
    finally:
        store.close()


def test_websocket_hello_needs_the_token(make_server, tmp_path):
    import json as _json
    from websockets.sync.client import connect
    from websockets.exceptions import ConnectionClosed
    srv = make_server(data_dir=tmp_path / "tok")
    token = srv.pairing_token()
    for bad in (None, "wrong"):
        with connect("ws://127.0.0.1:%d/ws" % srv.port) as ws:
            hello = {"type": "hello", "nick": "mallory", "proto": 1}
            if bad:
                hello["token"] = bad
            ws.send(_json.dumps(hello))
            err = _json.loads(ws.recv(timeout=15))
            assert err["code"] == "auth_failed" and err["fatal"] is True
            with pytest.raises(ConnectionClosed):
                ws.recv(timeout=15)
            assert ws.close_code == 1008
    with connect("ws://127.0.0.1:%d/ws" % srv.port) as ws:
        ws.send(_json.dumps({"type": "hello", "nick": "alice", "proto": 1, "token": token}))
        assert _json.loads(ws.recv(timeout=5))["type"] == "welcome"


def test_repeated_failures_from_one_address_are_slowed_down(make_server, tmp_path):
    from chatclient import ChatClient
    srv = make_server(data_dir=tmp_path / "slow")
    durations = []
    for _ in range(cs.AUTH_FREE_FAILURES + 2):
        c = ChatClient(srv.port)
        t0 = time.monotonic()
        c.send({"type": "hello", "nick": "guess", "proto": 1, "token": "nope"})
        frames = c.expect_closed(timeout=20)
        durations.append(time.monotonic() - t0)
        assert frames[0]["code"] == "auth_failed"
    # the first failures are answered at once, later ones only after a growing delay
    quick = max(durations[:cs.AUTH_FREE_FAILURES])
    assert durations[-1] >= 0.9 and durations[-1] > quick + 0.5, durations


def test_new_token_rotates_and_persists(make_server, tmp_path):
    data = tmp_path / "rot"
    srv = make_server(data_dir=data)
    first = srv.pairing_token()
    srv.stop()
    assert _stored_token(data) == first
    srv = make_server(data_dir=data)
    assert srv.pairing_token() == first          # persisted across restarts
    srv.stop()
    srv = make_server("--new-token", data_dir=data)
    rotated = srv.pairing_token()
    assert rotated not in (None, first)
    srv.stop()
    assert _stored_token(data) == rotated


def test_banner_is_printed_with_the_pairing_url_and_never_the_token_in_a_path(make_server,
                                                                              tmp_path):
    srv = make_server("--advertise-host", "192.0.2.7", data_dir=tmp_path / "b")
    token = srv.pairing_token()
    url = "http://192.0.2.7:%d/#k=%s" % (srv.port, token)
    deadline = time.monotonic() + 10      # the port opens before the banner is printed
    while url not in srv.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    log = srv.log()
    assert url in log
    assert "/" + token not in log.replace("#k=" + token, "")
