"""A real RTSP server (GStreamer's gst-rtsp-server), run under the system Python, which has
Debian's GObject bindings (installed by `make system-deps`):

    /usr/bin/python3 tools/testbed/cameras/rtsp_server.py PORT --file CLIP.mp4
        rtsp://127.0.0.1:PORT/clip  re-streams the MP4's H.264 as is, once, in real time
    /usr/bin/python3 tools/testbed/cameras/rtsp_server.py PORT --frames DIR [--fps 25]
        rtsp://127.0.0.1:PORT/cam   a live camera that never ends: DIR's JPEG frames
                                    (00000.jpg, ...) in a loop, encoded live to H.264

Prints "ready" once listening. ``RtspServer`` (tools/testbed/cameras/__init__.py) runs it
from a test, and can stop and restart it on the same port.
"""

import argparse
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("port")
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--file")
    group.add_argument("--frames")
    p.add_argument("--fps", type=int, default=25)
    args = p.parse_args()
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(args.port)
    factory = GstRtspServer.RTSPMediaFactory()
    if args.file:
        mount = "/clip"
        # qtdemux hands rtph264pay the file's H.264 as is; no decoding or re-encoding here.
        factory.set_launch(f"( filesrc location={args.file} ! qtdemux ! queue ! rtph264pay name=pay0 pt=96 config-interval=1 )")
    else:
        mount = "/cam"
        factory.set_launch(
            f"( multifilesrc location={args.frames}/%05d.jpg loop=true caps=image/jpeg,framerate={args.fps}/1 "
            "! jpegdec ! videoconvert ! video/x-raw,format=I420 ! identity sync=true ! openh264enc "
            "! h264parse ! rtph264pay name=pay0 pt=96 config-interval=1 )"
        )
    factory.set_shared(True)
    server.get_mount_points().add_factory(mount, factory)
    if server.attach(None) == 0:
        print(f"cannot listen on 127.0.0.1:{args.port}", file=sys.stderr)
        return 1
    print("ready", flush=True)
    GLib.MainLoop().run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
