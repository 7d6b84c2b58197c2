"""credentials.resolve: source order, netrc with port, YAML permissions, no password leaks."""

from __future__ import annotations

import pytest

from xnat_prep import credentials
from xnat_prep.errors import UserError

HOST = "http://127.0.0.1:18080"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    """No ambient credentials: empty home, no env variables."""
    for var in ("XNAT_USER", "XNAT_PASS", "XNATPY_USER", "XNATPY_PASS", "NETRC", "XNAT_CREDENTIALS_FILE"):
        monkeypatch.delenv(var, raising=False)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    return home


def write(path, text, mode=0o600):
    path.write_text(text)
    path.chmod(mode)
    return path


def test_env_wins_over_files(monkeypatch, clean_env):
    monkeypatch.setenv("XNAT_USER", "envuser")
    monkeypatch.setenv("XNAT_PASS", "envpass")
    write(clean_env / ".netrc", "machine 127.0.0.1:18080 login n password p\n")
    found = credentials.resolve(HOST)
    assert (found.user, found.password) == ("envuser", "envpass")
    assert "XNAT_USER" in found.source


def test_xnatpy_env_names(monkeypatch):
    monkeypatch.setenv("XNATPY_USER", "u")
    monkeypatch.setenv("XNATPY_PASS", "p")
    assert credentials.resolve(HOST).user == "u"


def test_half_env_pair_is_an_error(monkeypatch):
    monkeypatch.setenv("XNAT_USER", "u")
    with pytest.raises(UserError, match="XNAT_PASS"):
        credentials.resolve(HOST)


def test_netrc_machine_with_port_before_hostname(clean_env):
    write(
        clean_env / ".netrc",
        "machine 127.0.0.1 login host password hp\nmachine 127.0.0.1:18080 login port password pp\n",
    )
    found = credentials.resolve(HOST)
    assert (found.user, found.password) == ("port", "pp")
    assert "127.0.0.1:18080" in found.source


def test_netrc_falls_back_to_hostname_and_honours_NETRC(monkeypatch, tmp_path):
    path = write(tmp_path / "mynetrc", "machine 127.0.0.1 login host password hp\n")
    monkeypatch.setenv("NETRC", str(path))
    assert credentials.resolve(HOST).user == "host"


def test_yaml_0600_accepted_with_per_host_entry(clean_env):
    hosts = f"hosts:\n  {HOST}:\n    username: hu\n    password: hp\n"
    write(clean_env / ".xnat", "username: dflt\npassword: dp\n" + hosts)
    assert credentials.resolve(HOST).user == "hu"
    assert credentials.resolve("https://other.example.org").user == "dflt"


def test_yaml_readable_by_group_is_refused_with_the_fix(monkeypatch, tmp_path):
    path = write(tmp_path / "creds.yaml", "username: u\npassword: p\n", mode=0o644)
    monkeypatch.setenv("XNAT_CREDENTIALS_FILE", str(path))
    with pytest.raises(UserError, match=f"chmod 600 {path}"):
        credentials.resolve(HOST)


def test_nothing_found_names_the_three_sources():
    with pytest.raises(UserError) as info:
        credentials.resolve(HOST)
    message = str(info.value)
    assert "XNAT_USER" in message and "netrc" in message and ".xnat" in message


def test_repr_and_str_hide_the_password():
    found = credentials.Credentials("someone", "s3cr3t-value", "test")
    assert "s3cr3t-value" not in repr(found)
    assert "s3cr3t-value" not in str(found)
    assert "someone" in repr(found)


SECRET = "Pa55-in-the-file"


@pytest.mark.parametrize(
    ("name", "text", "line"),
    [
        (".xnat", f"username: me\npassword: {SECRET}: oops\n", 2),
        (".xnat", f"username: me\npassword: [{SECRET}\n", 3),
        (".xnat", f"username: me\n\tpassword: {SECRET}\n", 2),
        (".netrc", f"machine 127.0.0.1:18080 login me password {SECRET} bogus {SECRET}\n", 1),
    ],
)
def test_parse_errors_name_file_and_line_never_the_content(clean_env, name, text, line):
    write(clean_env / name, text)
    with pytest.raises(UserError) as info:
        credentials.resolve(HOST)
    message = str(info.value)
    assert str(clean_env / name) in message and f"line {line}" in message
    assert SECRET not in message and "\n" not in message


def test_netrc_readable_by_others_is_refused(clean_env):
    path = write(clean_env / ".netrc", f"machine 127.0.0.1:18080 login me password {SECRET}\n", mode=0o644)
    with pytest.raises(
        UserError, match=rf"netrc file {path} is readable by other users; fix with: chmod 600"
    ):
        credentials.resolve(HOST)
