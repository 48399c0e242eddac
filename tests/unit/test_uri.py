"""Source URIs: classify, redact, default stream names; credentials never leak."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.sources.uri import (
    SourceKind,
    SourceUri,
    UriError,
    classify,
    default_stream_name,
    redact,
    valid_stream_name,
)

# URIs holding a secret, and the secret each holds; the hard cases put "/" or "@" in the password.
SECRET_URIS = [
    ("rtsp://admin:secret@10.0.0.7/s1", "secret"),
    ("rtsp://admin:se/cret@10.0.0.7/s1", "se/cret"),
    ("rtsp://admin:p@ss@10.0.0.7/s1", "p@ss"),
    ("rtsp://admin:p@ss/w@rd@10.0.0.7:554/live/main", "p@ss/w@rd"),
    ("rtsps://user:hunter2@cam.example.com/stream", "hunter2"),
    ("http://user:pa:ss@cam.local:8080/video.mjpg", "pa:ss"),
    ("https://cam.example.com/live.m3u8?token=abc123", "abc123"),
    ("https://cam.example.com/live?access_token=tok3n&x=1", "tok3n"),
    ("https://cam.example.com/live?sig=s1gnature&expires=99", "s1gnature"),
    ("http://user:pw5ecret@10.0.0.7/s1?token=t0ken#frag", "pw5ecret"),
    ("http://user:pw5ecret@10.0.0.7/s1?token=t0ken#frag", "t0ken"),
]


# -- classify ------------------------------------------------------------------------


def test_a_video_path_is_a_file_and_replays(tmp_path: Path) -> None:
    uri = str(tmp_path / "clip.mp4")

    result = classify(uri)

    assert result == SourceUri(uri, SourceKind.FILE)
    assert result.live is False


def test_a_path_that_does_not_exist_yet_is_a_file() -> None:
    assert classify("videos/missing.avi").kind is SourceKind.FILE


def test_an_existing_folder_is_an_image_folder_and_replays(tmp_path: Path) -> None:
    result = classify(str(tmp_path))

    assert result.kind is SourceKind.FOLDER
    assert result.live is False


@pytest.mark.parametrize("uri", ["0", "1", "12"])
def test_a_camera_index_is_a_live_camera(uri: str) -> None:
    result = classify(uri)

    assert result == SourceUri(uri, SourceKind.CAMERA)
    assert result.live is True


@pytest.mark.parametrize("uri", ["/dev/video0", "/dev/video12"])
def test_a_v4l2_device_is_a_live_camera(uri: str) -> None:
    assert classify(uri).kind is SourceKind.CAMERA
    assert classify(uri).live is True


@pytest.mark.parametrize(
    "uri",
    [
        "rtsp://10.0.0.7/s1",
        "rtsps://cam.example.com:322/stream",
        "http://cam.local:8080/video.mjpg",
        "https://cam.example.com/live.m3u8?token=abc",
        "RTSP://10.0.0.7/s1",
        "rtsp://10.0.0.7",
        "rtsp://admin:secret@10.0.0.7/s1",
        "rtsp://admin:p@ss@10.0.0.7/s1",
        "rtsp://admin:se/cret@10.0.0.7/s1",
    ],
)
def test_network_urls_are_live_network_sources(uri: str) -> None:
    result = classify(uri)

    assert result.kind is SourceKind.NETWORK
    assert result.live is True
    assert result.raw == uri  # the raw URI is kept for opening


def test_source_kinds_know_which_are_live() -> None:
    assert {k for k in SourceKind if k.live} == {SourceKind.CAMERA, SourceKind.NETWORK}


def test_file_uris_are_classified_by_their_path(tmp_path: Path) -> None:
    assert classify(f"file://{tmp_path}/clip.mp4") == SourceUri(f"{tmp_path}/clip.mp4", SourceKind.FILE)
    assert classify(f"file://{tmp_path}").kind is SourceKind.FOLDER
    assert classify("FILE:///dev/video0").kind is SourceKind.CAMERA


@pytest.mark.parametrize("uri", ["", " ", "   ", "\t\n"])
def test_an_empty_uri_is_refused_with_what_would_work(uri: str) -> None:
    with pytest.raises(UriError, match="empty") as excinfo:
        classify(uri)

    assert "rtsp://" in str(excinfo.value)


def test_a_uri_that_is_not_a_string_is_refused() -> None:
    with pytest.raises(UriError):
        classify(None)  # type: ignore[arg-type]


@pytest.mark.parametrize("uri", [" a.mp4", "a.mp4 ", "0\n", "rtsp://10.0.0.7/s1 "])
def test_a_space_padded_uri_is_refused(uri: str) -> None:
    with pytest.raises(UriError, match="leading or trailing spaces"):
        classify(uri)


@pytest.mark.parametrize(
    ("uri", "password"),
    [
        ("rtsp://admin:secret@10.0.0.7/s1 ", "secret"),
        ("rtsp://admin:p@ss@10.0.0.7/s1\n", "p@ss"),
        (" rtsp://admin:secret@10.0.0.7/s1", "secret"),
        ("\trtsp://admin:p@ss@10.0.0.7/s1", "p@ss"),
    ],
)
def test_a_space_padded_uri_error_never_shows_the_password(uri: str, password: str) -> None:
    with pytest.raises(UriError, match="leading or trailing spaces") as excinfo:
        classify(uri)

    assert password not in str(excinfo.value)


@pytest.mark.parametrize(
    ("uri", "password"),
    [
        ("ftp://admin:secret@10.0.0.7/video.mp4", "secret"),
        ("rtmp://admin:p@ss@10.0.0.7/live", "p@ss"),
        ("srt://admin:se/cret@10.0.0.7:9000", "se/cret"),
        ("udp://host:1234?passphrase=letmein", "letmein"),
    ],
)
def test_an_unsupported_scheme_is_refused_without_the_password(uri: str, password: str) -> None:
    with pytest.raises(UriError, match="is not supported") as excinfo:
        classify(uri)

    message = str(excinfo.value)
    assert password not in message
    assert "rtsp://" in message and "https://" in message  # says what would work


@pytest.mark.parametrize(
    ("uri", "password"),
    [
        ("rtsp://", None),
        ("http:///video.mjpg", None),
        ("https://?token=abc", "abc"),
        ("rtsp://:554/s1", None),
        ("rtsp://admin:secret@/s1", "secret"),
        ("rtsp://admin:p@ss@:554/s1", "p@ss"),
        ("rtsp://admin:se/cret@", "se/cret"),
    ],
)
def test_a_url_without_a_host_is_refused_without_the_password(uri: str, password: str | None) -> None:
    with pytest.raises(UriError, match="names no host") as excinfo:
        classify(uri)

    if password is not None:
        assert password not in str(excinfo.value)


def test_uri_error_is_a_value_error() -> None:
    assert issubclass(UriError, ValueError)


# -- redact --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("rtsp://admin:secret@10.0.0.7/s1", "rtsp://***@10.0.0.7/s1"),
        ("rtsp://admin:se/cret@10.0.0.7/s1", "rtsp://***@10.0.0.7/s1"),
        ("rtsp://admin:p@ss@10.0.0.7/s1", "rtsp://***@10.0.0.7/s1"),
        ("rtsp://admin@10.0.0.7:554/s1", "rtsp://***@10.0.0.7:554/s1"),
        ("rtsps://user:hunter2@cam.example.com/stream", "rtsps://***@cam.example.com/stream"),
        ("https://cam.example.com/live.m3u8?token=abc123", "https://cam.example.com/live.m3u8?token=***"),
        ("https://cam.example.com/live?access_token=tok3n&x=1", "https://cam.example.com/live?access_token=***&x=***"),
        ("https://cam.example.com/live?sig=a=b&&flag", "https://cam.example.com/live?sig=***&***"),
        ("http://10.0.0.7/s1#secretfragment", "http://10.0.0.7/s1#***"),
        ("http://user:pw@10.0.0.7/s1?token=t0ken#frag", "http://***@10.0.0.7/s1?token=***#***"),
        ("RTSP://admin:secret@10.0.0.7/s1", "RTSP://***@10.0.0.7/s1"),
        ("ftp://admin:secret@host/x", "ftp://***@host/x"),
    ],
)
def test_redact_masks_credentials_query_values_and_fragments(uri: str, expected: str) -> None:
    assert redact(uri) == expected


@pytest.mark.parametrize(
    "uri",
    [
        "rtsp://10.0.0.7/s1",
        "rtsp://10.0.0.7:554/live/main",
        "http://cam.local:8080/video.mjpg",
        "https://cam.example.com/",
        "file:///videos/a.mp4",
    ],
)
def test_redact_leaves_uris_without_credentials_unchanged(uri: str) -> None:
    assert redact(uri) == uri


@pytest.mark.parametrize("uri", ["videos/a.mp4", "/data/frames", "0", "/dev/video0", "", "not a url"])
def test_redact_leaves_non_urls_unchanged(uri: str) -> None:
    assert redact(uri) == uri


@pytest.mark.parametrize(("uri", "secret"), SECRET_URIS)
def test_redact_never_shows_a_secret(uri: str, secret: str) -> None:
    assert secret not in redact(uri)


@pytest.mark.parametrize(
    ("uri", "secret"),
    [
        ("https://cam.example.com/live?token=abc@def", "def"),
        ("https://cam.example.com/live#state=abc@def", "def"),
    ],
)
def test_redact_masks_a_query_value_or_fragment_that_holds_an_at_sign(uri: str, secret: str) -> None:
    # An '@' after '?' could be a query value's or a password's (holding '?'): both readings are masked.
    assert secret not in redact(uri)
    assert redact(uri) == "https://***"


@pytest.mark.parametrize("uri", ["rtsp://user:pa?ss@10.0.0.7/cam", "rtsp://user:pa#ss@10.0.0.7/cam"])
def test_a_password_holding_a_question_mark_or_hash_is_masked(uri: str) -> None:
    assert "ss" not in redact(uri).split("://", 1)[1] and "pa" not in redact(uri)


# -- default stream names ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "name"),
    [
        ("videos/lobby.mp4", "lobby"),
        ("/data/frames/door", "door"),
        ("file:///videos/lobby.mp4", "lobby"),
        ("0", "camera0"),
        ("3", "camera3"),
        ("/dev/video0", "video0"),
        ("rtsp://10.0.0.7/s1", "s1"),
        ("rtsp://10.0.0.7/live/main/", "main"),
        ("rtsp://10.0.0.7:554", "10.0.0.7"),
        ("rtsp://cam.local", "cam.local"),
        ("http://cam.local:8080/video.mjpg", "video.mjpg"),
        ("https://cam.example.com/?token=abc", "cam.example.com"),
        ("rtsp://host/my stream", "my_stream"),
        ("rtsp://host/%%%", "stream"),
    ],
)
def test_default_stream_name_is_the_stem_camera_index_or_last_path_segment(uri: str, name: str) -> None:
    assert default_stream_name(uri) == name


@pytest.mark.parametrize(
    ("uri", "name"),
    [
        ("rtsp://admin:secret@10.0.0.7/s1", "s1"),
        ("rtsp://admin:se/cret@10.0.0.7/s1", "s1"),
        ("rtsp://admin:p@ss@10.0.0.7/s1", "s1"),
        ("rtsp://admin:secret@10.0.0.7:554", "10.0.0.7"),
        ("rtsp://admin:p@ss/w@rd@10.0.0.7", "10.0.0.7"),
        ("https://cam.example.com/live.m3u8?token=abc123", "live.m3u8"),
        ("https://cam.example.com/live?access_token=tok3n", "live"),
        ("http://user:pw@10.0.0.7/s1?token=t0ken#frag", "s1"),
    ],
)
def test_default_stream_name_is_built_from_host_and_path_only(uri: str, name: str) -> None:
    assert default_stream_name(uri) == name


@pytest.mark.parametrize(("uri", "secret"), SECRET_URIS)
def test_default_stream_name_never_contains_a_secret(uri: str, secret: str) -> None:
    assert secret not in default_stream_name(uri)


def test_default_stream_name_ignores_an_at_sign_in_the_query() -> None:
    assert default_stream_name("https://cam.example.com/live?token=abc@def") == "live"


@pytest.mark.parametrize(
    "uri",
    ["videos/lobby.mp4", "0", "/dev/video0", "rtsp://admin:p@ss@10.0.0.7/s1", "rtsp://host/%%%",
     "https://cam.example.com/?token=abc", "videos/" + "x" * 100 + ".mp4", "rtsp://host/_weird-"],
)
def test_default_stream_names_are_valid_stream_names(uri: str) -> None:
    name = default_stream_name(uri)

    assert valid_stream_name(name)
    assert len(name) <= 64


def test_valid_stream_name_refuses_labels_that_cannot_be_metric_labels() -> None:
    assert valid_stream_name("cam-1.main_2")
    assert not valid_stream_name("")
    assert not valid_stream_name("_cam")
    assert not valid_stream_name("cam 1")
    assert not valid_stream_name("a" * 65)


# -- SourceUri --------------------------------------------------------------------------


@pytest.mark.parametrize(("uri", "secret"), SECRET_URIS)
def test_source_uri_repr_and_str_never_show_the_secret(uri: str, secret: str) -> None:
    source = classify(uri)

    assert secret not in repr(source)
    assert secret not in str(source)
    assert secret not in f"{source}"
    assert secret not in repr([source])
    assert secret not in source.display


def test_source_uri_repr_shows_the_redacted_uri_and_kind() -> None:
    source = classify("rtsp://admin:p@ss@10.0.0.7/s1")

    assert repr(source) == "SourceUri('rtsp://***@10.0.0.7/s1', network)"
    assert source.display == "rtsp://***@10.0.0.7/s1"
    assert source.raw == "rtsp://admin:p@ss@10.0.0.7/s1"


def test_file_uris_name_a_local_path_with_its_escapes_decoded(tmp_path: Path) -> None:
    clip = tmp_path / "my clip.mp4"
    assert classify(f"file://{tmp_path}/my%20clip.mp4") == SourceUri(str(clip), SourceKind.FILE)
    assert classify(f"file://localhost{tmp_path}/my%20clip.mp4").raw == str(clip)
    assert default_stream_name(f"file://{tmp_path}/my%20clip.mp4") == "my_clip"
    with pytest.raises(UriError, match=r"file:///abs/path \(not host 'cams'\)"):
        classify("file://cams/videos/a.mp4")


def test_a_file_uri_reaches_the_capture_process_as_an_absolute_path(tmp_path: Path) -> None:
    """What the control API, the command line and a config give the supervisor is what capture opens."""
    from pipeline.config import SourceConfig
    from pipeline.supervision.launch import add_stream_message
    from pipeline.supervision.registry import StreamTable
    from tests.support.runs import config

    table = StreamTable(4)
    source = SourceConfig(uri=f"file://{tmp_path}/a%20b.mp4", name="ab")
    entry = table.add("ab", source, live=False, workers=["capture:0"])

    message = add_stream_message(config(sources=[{"uri": "x.mp4"}]), entry, None)

    assert message.uri == str(tmp_path / "a b.mp4")
