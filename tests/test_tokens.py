from __future__ import annotations

import time
from pathlib import Path

import jwt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.exceptions import (
    AuthError,
    ForbiddenError,
    TokenExpiredError,
    TokenInvalidError,
    TokenMissingError,
    WrongRoomError,
)
from sfu.settings import Settings, load_or_create_secret
from sfu.tokens import Grants, mint_token, require_host, verify_token

SECRET = "s" * 48


def test_round_trip_keeps_every_grant() -> None:
    grants = Grants(
        room="standup",
        identity="cap-1",
        name="Captions",
        role="participant",
        can_publish=False,
        can_subscribe=True,
        hidden=True,
        captioner=True,
    )
    assert verify_token(SECRET, mint_token(SECRET, grants), room="standup") == grants


def test_role_defaults() -> None:
    guest = Grants.for_role("lobby", "Gus", "guest")
    assert not guest.can_publish and guest.can_subscribe and not guest.is_host
    host = Grants.for_role("lobby", "Hana Ito", "host")
    assert host.is_host and host.can_publish and host.identity.startswith("hana-ito-")
    assert Grants.for_role("lobby", "Hana Ito", "host").identity != host.identity


@pytest.mark.parametrize(
    ("token", "error", "code"),
    [
        (None, TokenMissingError, "token_missing"),
        ("", TokenMissingError, "token_missing"),
        ("not-a-jwt", TokenInvalidError, "token_invalid"),
        ("x" * 5000, TokenInvalidError, "token_invalid"),
    ],
)
def test_missing_or_garbage(token: str | None, error: type[AuthError], code: str) -> None:
    with pytest.raises(error) as info:
        verify_token(SECRET, token)
    assert info.value.code == code


def test_bad_signature() -> None:
    token = mint_token("another-secret-" * 4, Grants.for_role("lobby", "Eve", "host"))
    with pytest.raises(TokenInvalidError) as info:
        verify_token(SECRET, token)
    assert info.value.code == "token_invalid"


def test_unsigned_token_is_refused() -> None:
    claims = {
        "iss": "sovereign-captions",
        "sub": "eve",
        "iat": 0,
        "exp": time.time() + 60,
        "grants": {"room": "lobby", "identity": "eve", "role": "host"},
    }
    token = jwt.encode(claims, None, algorithm="none")
    with pytest.raises(TokenInvalidError):
        verify_token(SECRET, token)


def test_expired() -> None:
    token = mint_token(SECRET, Grants.for_role("lobby", "Al", "host"), ttl=1)
    claims = jwt.decode(token, SECRET, algorithms=["HS256"])
    claims["exp"] = int(time.time()) - 10
    expired = jwt.encode(claims, SECRET, algorithm="HS256")
    with pytest.raises(TokenExpiredError) as info:
        verify_token(SECRET, expired)
    assert info.value.code == "token_expired"


def test_wrong_room() -> None:
    token = mint_token(SECRET, Grants.for_role("lobby", "Al", "host"))
    with pytest.raises(WrongRoomError) as info:
        verify_token(SECRET, token, room="boardroom")
    assert info.value.code == "wrong_room"
    assert verify_token(SECRET, token, room="lobby").room == "lobby"


def test_forged_grants_types_are_refused() -> None:
    claims = {
        "iss": "sovereign-captions",
        "sub": "eve",
        "iat": 0,
        "exp": time.time() + 60,
        "grants": {"room": "lobby", "identity": "eve", "role": "host", "hidden": "yes"},
    }
    with pytest.raises(TokenInvalidError):
        verify_token(SECRET, jwt.encode(claims, SECRET, algorithm="HS256"))
    claims["grants"] = {"room": "lobby", "identity": "mallory", "role": "host"}
    with pytest.raises(TokenInvalidError):
        verify_token(SECRET, jwt.encode(claims, SECRET, algorithm="HS256"))


def test_host_only() -> None:
    require_host(Grants.for_role("lobby", "H", "host"), "toggle captions")
    for role in ("participant", "guest"):
        with pytest.raises(ForbiddenError) as info:
            require_host(Grants.for_role("lobby", "P", role), "toggle captions")  # type: ignore[arg-type]
        assert info.value.code == "forbidden"


@pytest.mark.parametrize("room", ["", "a/b", "x" * 65, "../etc"])
def test_bad_room_names(room: str) -> None:
    with pytest.raises(TokenInvalidError):
        Grants.for_role(room, "A", "host")


def test_secret_is_generated_once_and_kept(tmp_path: Path) -> None:
    first = Settings.from_env({}, data_dir=tmp_path / "d").secret
    assert len(first) >= 32
    assert load_or_create_secret(tmp_path / "d") == first
    assert (tmp_path / "d" / "secret").stat().st_mode & 0o077 == 0
    assert Settings.from_env({"CAPTIONS_SECRET": "e" * 40}, data_dir=tmp_path).secret == "e" * 40


def test_env_and_overrides(tmp_path: Path) -> None:
    env = {"CAPTIONS_DATA_DIR": str(tmp_path), "CAPTIONS_PORT": "9000"}
    settings = Settings.from_env(env, host="0.0.0.0")
    assert settings.data_dir == tmp_path and settings.port == 9000
    assert settings.base_url == "http://127.0.0.1:9000"
    assert Settings.from_env(env, tls_self_signed=True).base_url.startswith("https://")


def test_token_cli_prints_join_link_last(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import argparse

    from cli.token import register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(
        [
            "token",
            "--room",
            "lobby",
            "--name",
            "Alice",
            "--role",
            "host",
            "--data-dir",
            str(tmp_path),
            "--base-url",
            "https://meet.example:8443/",
            "--ttl",
            "60",
        ]
    )
    assert args.func(args) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    prefix = "https://meet.example:8443/room/lobby#token="
    assert last.startswith(prefix)
    grants = verify_token(load_or_create_secret(tmp_path), last[len(prefix) :], room="lobby")
    assert grants.is_host and grants.name == "Alice"


@given(st.text(max_size=300))
@settings(max_examples=200, deadline=None)
def test_any_string_is_accepted_or_refused_with_an_auth_error(text: str) -> None:
    try:
        verify_token(SECRET, text)
    except AuthError as exc:
        assert exc.code in {"token_missing", "token_invalid", "token_expired"}


def test_display_names_are_cleaned_where_grants_are_made() -> None:
    from sfu.names import clean_display_name

    assert clean_display_name(" A\r\nB\t\u2028C\x85 ") == "A B C"
    assert clean_display_name("x\ud800y") == "x\ufffdy"
    assert clean_display_name("e\u0301") == "\u00e9"  # NFC
    assert clean_display_name("\u202egnp.exe\u200b") == "gnp.exe"
    assert clean_display_name("👩\u200d💻") == "👩\u200d💻"  # ZWJ kept
    grants = Grants.for_role("r", "Eve\r\n\r\n9\r\nHost: hi", "participant")
    assert grants.name == "Eve 9 Host: hi"
    with pytest.raises(TokenInvalidError):
        Grants.for_role("r", "x" * 65, "participant")
    with pytest.raises(TokenInvalidError):
        Grants("r", "id\nentity")


def test_a_short_secret_is_refused_from_the_environment_as_from_the_file(tmp_path: Path) -> None:
    from common.exceptions import ConfigError

    with pytest.raises(ConfigError, match="shorter than 32"):
        Settings.from_env({"CAPTIONS_SECRET": "abc"}, data_dir=tmp_path)
    (tmp_path / "secret").write_text("abc\n")
    with pytest.raises(ConfigError, match="shorter than 32"):
        Settings.from_env({}, data_dir=tmp_path).secret  # noqa: B018


@pytest.mark.parametrize("ttl", ["nan", "inf", "-5", "0", "1e300"])
def test_token_cli_refuses_a_ttl_that_is_not_a_sane_duration(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], ttl: str
) -> None:
    from cli.main import main

    args = ["token", "--room", "lobby", "--name", "A", "--data-dir", str(tmp_path), "--ttl", ttl]
    assert main(args) == 2
    assert "ttl must be" in capsys.readouterr().err


def test_token_cli_mints_a_sidecar_token(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """README: ``captions sidecar --token T`` needs a token with the captioner grant."""
    from cli.main import main

    assert main(["token", "--room", "standup", "--captioner", "--data-dir", str(tmp_path)]) == 0
    token = capsys.readouterr().out.strip()
    grants = verify_token(load_or_create_secret(tmp_path), token, room="standup")
    assert grants.captioner and grants.hidden and not grants.can_publish
    assert main(["token", "--room", "standup", "--data-dir", str(tmp_path)]) == 2
    assert "--name is required" in capsys.readouterr().err


def test_host_powers_end_with_the_token_without_leeway() -> None:
    token = mint_token(SECRET, Grants.for_role("r", "Host", "host"), ttl=60)
    grants = verify_token(SECRET, token)
    assert grants.expires_at is not None
    require_host(grants, "act", now=grants.expires_at - 0.5)
    with pytest.raises(TokenExpiredError):
        require_host(grants, "act", now=grants.expires_at)
    assert "expires_at" not in jwt.decode(token, SECRET, algorithms=["HS256"])["grants"]


def test_token_cli_warns_when_it_creates_the_secret(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server given CAPTIONS_SECRET (or another data dir) would refuse links signed with a
    freshly made secret: the command says so, once, when it had to create one."""
    from cli.main import main

    monkeypatch.delenv("CAPTIONS_SECRET", raising=False)
    data = tmp_path / "data"
    args = ["token", "--room", "lobby", "--name", "A", "--data-dir", str(data)]
    assert main(args) == 0
    first = capsys.readouterr()
    assert "warning" in first.err and "CAPTIONS_SECRET" in first.err
    assert str(data / "secret") in first.err
    assert "#token=" in first.out.splitlines()[-1]
    # The secret exists now: no warning, same secret.
    assert main(args) == 0
    assert capsys.readouterr().err == ""
    assert main(["token", "--room", "lobby", "--captioner", "--data-dir", str(data)]) == 0
    assert capsys.readouterr().err == ""
    # Given CAPTIONS_SECRET, nothing is created and nothing is said.
    monkeypatch.setenv("CAPTIONS_SECRET", "e" * 48)
    other = tmp_path / "other"
    assert main(["token", "--room", "lobby", "--name", "A", "--data-dir", str(other)]) == 0
    assert capsys.readouterr().err == ""
    assert not (other / "secret").exists()
