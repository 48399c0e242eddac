"""A real RTSP server (GStreamer's gst-rtsp-server) re-streaming an H.264 MP4 without re-encoding.

Runs under the system Python, which has Debian's GObject bindings:

    /usr/bin/python3 tests/servers/rtsp_server.py CLIP.mp4 PORT

Serves rtsp://127.0.0.1:PORT/clip in real time and prints "ready" once listening.
Installed by `make system-deps` (gir1.2-gst-rtsp-server-1.0, gstreamer1.0-plugins-good, python3-gi).
"""

import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def main() -> int:
    clip, port = sys.argv[1], sys.argv[2]
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(port)
    factory = GstRtspServer.RTSPMediaFactory()
    # qtdemux hands rtph264pay the file's H.264 as is; no decoding or re-encoding here.
    factory.set_launch(f"( filesrc location={clip} ! qtdemux ! queue ! rtph264pay name=pay0 pt=96 config-interval=1 )")
    factory.set_shared(True)
    server.get_mount_points().add_factory("/clip", factory)
    if server.attach(None) == 0:
        print(f"cannot listen on 127.0.0.1:{port}", file=sys.stderr)
        return 1
    print("ready", flush=True)
    GLib.MainLoop().run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
