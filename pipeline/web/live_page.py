"""The live page: one self-contained HTML page served by the supervisor.

    GET /                 the page (inline CSS and script: no build step, nothing fetched from elsewhere)
    GET /api/live         JSON: readiness, totals, and per stream its state, counters, active actions,
                          last events, latest probabilities and frame
    GET /frames/KEY.jpg   a stream's latest annotated frame (KEY from /api/live)

Stream states and counters come from the supervisor (the same as the control
API's); what the model sees (frames, active actions, last events) from the
overlay stage's board, published as files in the run directory
(``pipeline.stages.overlay.board``). The page polls once a second. It is read-only;
it shows camera frames, so it listens on loopback unless told otherwise.
Served by Starlette on uvicorn (``pipeline.web.http_server``), like the control API.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from http import HTTPStatus
from pathlib import Path

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from pipeline.supervision.view import PipelineView
from pipeline.web.guards import CloseAfterRefusal, RefuseAmbiguousFraming
from pipeline.web.http_server import HttpServer

logger = logging.getLogger(__name__)
_FRAME_KEY = re.compile(r"[0-9a-f]{1,256}")
_NO_STORE = {"Cache-Control": "no-store"}


class RateMeter:
    """Steps per second between answers at least ``window_s`` apart (a page refresh alone cannot tell)."""

    def __init__(self, window_s: float = 2.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._window_s = window_s
        self._clock = clock
        self._lock = threading.Lock()
        self._samples: deque[tuple[float, int]] = deque(maxlen=1000)

    def rate(self, total: int) -> float | None:
        now = self._clock()
        with self._lock:
            self._samples.append((now, total))
            while len(self._samples) > 2 and now - self._samples[1][0] >= self._window_s:
                self._samples.popleft()
            first_t, first_total = self._samples[0]
            if now - first_t <= 0 or total < first_total:  # no time passed, or counters started again
                return None
            return (total - first_total) / (now - first_t)


def live_state(view: PipelineView, board_dir: Path, meter: RateMeter | None = None) -> dict:
    """What /api/live answers: the pipeline's view of every stream joined with the overlay's board.

    ``dropped`` leaves out frames skipped by design (``sampling``: the model runs at its step rate):
    it counts frames that should have been scored and were not."""
    try:
        board = json.loads((board_dir / "state.json").read_bytes())
    except (OSError, ValueError):
        board = {"classes": [], "streams": {}}
    ready, readiness = view.readiness()
    streams = []
    totals = {"streams": 0, "live": 0, "failed": 0, "processed": 0, "dropped": 0, "events": 0, "reconnects": 0,
              "overlay_frames": 0}
    for row in view.streams():
        seen = board["streams"].get(row["name"], {})
        dropped = sum(n for reason, n in row.get("dropped", {}).items() if reason != "sampling")
        streams.append({
            "name": row["name"], "state": row["state"], "reason": row.get("reason"), "error": row.get("error"),
            "processed": row.get("processed", 0), "dropped": dropped, "dropped_by_reason": row.get("dropped", {}),
            "events": row.get("events", 0), "reconnects": row.get("reconnects", 0),
            "state_origin": row.get("state_origin", "fresh"), "state_age_s": row.get("state_age_s"),
            "active": seen.get("active", {}), "last_events": seen.get("events", []), "t": seen.get("t"),
            "probs": seen.get("probs", {}),
            "frame": f"/frames/{seen['frame']}" if seen.get("frame") else None,
            "frame_version": seen.get("frame_version", 0),
        })
        totals["streams"] += 1
        totals["live"] += row["state"] == "live"
        totals["failed"] += row["state"] == "failed"
        totals["processed"] += row.get("processed", 0)
        totals["dropped"] += dropped
        totals["events"] += row.get("events", 0)
        totals["reconnects"] += row.get("reconnects", 0)
        totals["overlay_frames"] += seen.get("rendered", 0)
    totals["steps_per_s"] = meter.rate(totals["processed"]) if meter is not None else None
    return {"ready": ready, "status": readiness.get("status"), "classes": board.get("classes", []),
            "totals": totals, "streams": streams}


_NOT_FOUND = "not found: the live page is at /"


def _settings(request: Request) -> LivePageServer:
    return request.app.state.settings


async def page(request: Request) -> Response:
    return Response(PAGE, media_type="text/html; charset=utf-8", headers=_NO_STORE)


async def api_live(request: Request) -> Response:
    server = _settings(request)
    # Reads the board's files and the view's counters: on a worker thread, never on the event loop.
    state = await anyio.to_thread.run_sync(live_state, server.view, server.board_dir, server.meter,
                                           abandon_on_cancel=True)
    return Response(json.dumps(state), media_type="application/json", headers=_NO_STORE)


async def frame(request: Request) -> Response:
    key = request.path_params["key"]
    if not _FRAME_KEY.fullmatch(key):
        return PlainTextResponse(_NOT_FOUND, status_code=HTTPStatus.NOT_FOUND, headers=_NO_STORE)
    path = _settings(request).board_dir / f"{key}.jpg"
    try:
        data = await anyio.Path(path).read_bytes()
    except OSError:
        return PlainTextResponse("no frame yet", status_code=HTTPStatus.NOT_FOUND, headers=_NO_STORE)
    return Response(data, media_type="image/jpeg", headers=_NO_STORE)


async def _not_found(request: Request, exc: Exception) -> Response:
    return PlainTextResponse(_NOT_FOUND, status_code=HTTPStatus.NOT_FOUND, headers=_NO_STORE)


def live_app(server: LivePageServer) -> Starlette:
    routes = [Route("/", page, methods=["GET"]), Route("/index.html", page, methods=["GET"]),
              Route("/api/live", api_live, methods=["GET"]), Route("/frames/{key}.jpg", frame, methods=["GET"])]
    app = Starlette(routes=routes, exception_handlers={404: _not_found, 405: _not_found})
    app.state.settings = server
    app.add_middleware(CloseAfterRefusal)
    app.add_middleware(RefuseAmbiguousFraming)
    return app


class LivePageServer(HttpServer):
    """The page's server; ``view`` and ``board_dir`` are read at each request."""

    def __init__(self, view: PipelineView, board_dir: Path, host: str, port: int) -> None:
        self.view = view
        self.board_dir = board_dir
        self.meter = RateMeter()
        super().__init__(live_app(self), host, port, name="live-page")


def start_live_page(view: PipelineView, board_dir: Path, host: str, port: int) -> LivePageServer:
    server = LivePageServer(view, board_dir, host, port)
    logger.info("live page at http://%s:%d/", host, server.server_port)
    return server


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>actionpipe live</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{margin:0;font:14px/1.4 system-ui,sans-serif;background:#16181c;color:#e6e6e6}
header{display:flex;flex-wrap:wrap;gap:18px;align-items:baseline;padding:12px 18px;background:#20242a}
h1{font-size:18px;margin:0 12px 0 0}
.total b{font-size:18px;display:block}.total{color:#9aa3ad}
#status.ready{color:#5ad17a}#status.starting,#status.degraded,#status.stopping{color:#f0b44c}#status.down{color:#ef6b6b}
main{display:grid;grid-template-columns:repeat(auto-fill,minmax(420px,1fr));gap:14px;padding:14px}
.card{background:#20242a;border-radius:8px;padding:10px}
.card h2{font-size:16px;margin:0 0 6px;display:flex;justify-content:space-between}
.state{font-size:12px;padding:2px 8px;border-radius:10px;background:#444}
.state.live{background:#1f6b3a}.state.reconnecting,.state.connecting{background:#7a5a12}
.state.failed{background:#8a2323}.state.ended{background:#3b4450}
.card img{width:100%;border-radius:4px;background:#000;min-height:60px;display:block}
.nofr{color:#9aa3ad;padding:24px 0;text-align:center}
.active span{display:inline-block;background:#1f6b3a;border-radius:4px;padding:1px 6px;margin:2px}
.counters{color:#9aa3ad;font-size:12px;margin:4px 0}
ul{margin:4px 0 0;padding-left:18px;font-size:13px}li.start{color:#5ad17a}li.end{color:#9aa3ad}
.err{color:#ef6b6b;font-size:12px}
</style></head><body>
<header><h1>actionpipe</h1><span id="status" class="down">connecting...</span>
<span class="total">streams live<b id="t-live">-</b></span>
<span class="total">steps scored<b id="t-processed">-</b></span>
<span class="total">steps/s<b id="t-rate">-</b></span>
<span class="total" title="frames that should have been scored and were not (sampling to the step rate left out)">frames dropped<b id="t-dropped">-</b></span>
<span class="total">events<b id="t-events">-</b></span>
<span class="total">reconnects<b id="t-reconnects">-</b></span></header>
<main id="streams"></main>
<script>
"use strict";
const cards = new Map();
function el(tag, cls, text){const e=document.createElement(tag);if(cls)e.className=cls;if(text!==undefined)e.textContent=text;return e;}
function fmt(t){if(t===null||t===undefined)return "-";const m=Math.floor(t/60),s=(t-60*m).toFixed(2);return m+":"+(s<10?"0":"")+s;}
function card(name){
  let c=cards.get(name);
  if(c) return c;
  c={root:el("section","card"),title:el("h2"),state:el("span","state"),img:el("img"),nofr:el("div","nofr","no frame yet"),
     active:el("div","active"),counters:el("div","counters"),err:el("div","err"),events:el("ul"),version:-1};
  c.root.dataset.stream=name;c.title.append(el("span",null,name),c.state);c.img.alt="latest frame of "+name;c.img.hidden=true;
  c.root.append(c.title,c.img,c.nofr,c.active,c.counters,c.err,c.events);
  document.getElementById("streams").append(c.root);cards.set(name,c);return c;
}
function render(data){
  const st=document.getElementById("status");st.textContent=data.status;st.className=data.status;
  const t=data.totals;
  document.getElementById("t-live").textContent=t.live+" / "+t.streams+(t.failed?" ("+t.failed+" failed)":"");
  document.getElementById("t-processed").textContent=t.processed;
  document.getElementById("t-dropped").textContent=t.dropped;
  document.getElementById("t-events").textContent=t.events;
  document.getElementById("t-reconnects").textContent=t.reconnects;
  document.getElementById("t-rate").textContent=t.steps_per_s===null?"-":t.steps_per_s.toFixed(1);
  const seen=new Set();
  for(const s of data.streams){
    seen.add(s.name);const c=card(s.name);
    c.state.textContent=s.state+(s.reason&&s.state!=="live"?" ("+s.reason+")":"");c.state.className="state "+s.state;
    if(s.frame&&s.frame_version!==c.version){c.version=s.frame_version;c.img.src=s.frame+"?v="+s.frame_version;c.img.hidden=false;c.nofr.hidden=true;}
    c.active.replaceChildren();
    const names=Object.keys(s.active);
    if(names.length){for(const a of names.sort())c.active.append(el("span",null,a));}else{c.active.append(el("em",null,"no action"));}
    c.counters.textContent="t "+fmt(s.t)+" | steps "+s.processed+" | dropped "+s.dropped+" | events "+s.events+" | reconnects "+s.reconnects+" | state "+s.state_origin+(s.state_age_s===null||s.state_age_s===undefined?"":", snapshot "+s.state_age_s.toFixed(1)+" s ago");
    c.err.textContent=s.error||"";
    c.events.replaceChildren();
    for(const e of s.last_events){c.events.append(el("li",e.kind,(e.kind==="start"?"\\u25b6 ":"\\u25a0 ")+e.action+" "+e.kind+" at "+fmt(e.t)+" ("+e.confidence.toFixed(2)+")"));}
  }
  for(const [name,c] of cards){if(!seen.has(name)){c.root.remove();cards.delete(name);}}
}
async function poll(){
  try{const r=await fetch("/api/live",{cache:"no-store"});render(await r.json());}
  catch(err){const st=document.getElementById("status");st.textContent="pipeline unreachable";st.className="down";}
  setTimeout(poll,1000);
}
poll();
</script></body></html>
"""
