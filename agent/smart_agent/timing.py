"""Real-user timings of performance experiments: the page's script and what it sends.

A performance experiment's pages load ``/_smart/timing.js`` (first-party, from the
agent's own nginx, cached for an hour). Once per page view, when the page is hidden
or three seconds after its ``load`` event, whichever comes first, the script reads the
browser's own measurements and posts them with ``navigator.sendBeacon`` to
``/_smart/timing`` on the same site, in the query string (``rum=``), with no body and
no cookie:

- time to first byte: ``responseStart`` of the W3C Navigation Timing entry (from the
  start of the navigation, so it includes the connection and the TLS handshake);
- largest contentful paint: the last ``largest-contentful-paint`` entry (W3C Largest
  Contentful Paint), ``-`` where the browser has none. An entry the browser has
  recorded but not yet handed to the observer is taken at send time
  (``takeRecords()``, as Google's web-vitals library does when the page is hidden):
  a visitor who leaves right after ``load`` would otherwise report none;
- transfer size: ``transferSize`` of the page and of every resource it loaded (what
  crossed the network, compressed or not, headers included; 0 from the browser cache);
- a page-view id (32 random bits: the same view read twice from the log counts once)
  and the view's age when it was sent (``performance.now()``), so the agent knows when
  the page was loaded, not only when the beacon arrived.

nginx answers a same-site ``POST`` with 204 and logs it like a page view (visitor id,
bot and prefetch flags, never the address or the user agent); ``parse`` and
``in_washout`` below are what the log reader applies to such a line. This module
neither reads the log nor stores anything.
"""

from __future__ import annotations

import math
import re
from typing import NamedTuple

TIMING_PATH = "/_smart/timing"
SCRIPT_PATH = "/_smart/timing.js"
MAX_MS = 600_000.0  # a timing above ten minutes is not a page load
MAX_BYTES = 1 << 30
DEFAULT_WASHOUT_SECONDS = 300

# The script, as nginx returns it: no single quote, backslash or dollar sign (the text
# sits in a single-quoted nginx string, where `$` starts a variable).
SCRIPT = (
    "(function(){"
    "var sent=false,lcp=-1,o=null;"
    "if(document.prerendering)return;"
    "function last(e){if(e.length)lcp=e[e.length-1].startTime;}"
    "try{o=new PerformanceObserver(function(l){last(l.getEntries());});"
    'o.observe({type:"largest-contentful-paint",buffered:true});}catch(x){}'
    "function ms(x){return Math.max(0,Math.round(x));}"
    "function send(){"
    "if(sent||!navigator.sendBeacon)return;"
    "if(o)last(o.takeRecords());"
    'var n=performance.getEntriesByType("navigation")[0];if(!n)return;sent=true;'
    "var b=n.transferSize||0;"
    'performance.getEntriesByType("resource").forEach(function(r){b+=r.transferSize||0;});'
    "var a=new Uint32Array(1);crypto.getRandomValues(a);"
    'var id=("0000000"+a[0].toString(16)).slice(-8);'
    'var rum=[id,ms(n.responseStart),lcp<0?"-":ms(lcp),b,ms(performance.now())].join(".");'
    'navigator.sendBeacon("' + TIMING_PATH + '?rum="+rum);}'
    'document.addEventListener("visibilitychange",function(){'
    'if(document.visibilityState==="hidden")send();});'
    'addEventListener("pagehide",send);'
    'addEventListener("load",function(){setTimeout(send,3000);});'
    "})();"
)
assert not re.search(r"['\\$]", SCRIPT), "the script must fit a single-quoted nginx string"

_RUM = re.compile(r"([0-9a-f]{8})\.(\d{1,9})\.(\d{1,9}|-)\.(\d{1,12})\.(\d{1,12})")


class Timing(NamedTuple):
    """One page view's timings, as the browser measured them."""

    view: int  # the page view's random id
    ttfb_ms: float
    lcp_ms: float | None  # None: the browser does not report LCP
    transfer_bytes: int
    age_ms: float  # from the start of the navigation to the beacon


def parse(value: str) -> Timing | None:
    """The timings of a ``rum=`` value, or None if it is not the script's or implausible."""
    match = _RUM.fullmatch(value)
    if match is None:
        return None
    view, ttfb, lcp, size, age = match.groups()
    timing = Timing(
        int(view, 16), float(ttfb), None if lcp == "-" else float(lcp), int(size), float(age)
    )
    if timing.ttfb_ms > MAX_MS or (timing.lcp_ms or 0.0) > MAX_MS:
        return None
    if timing.transfer_bytes > MAX_BYTES or timing.age_ms > 86_400_000:
        return None
    return timing


def in_washout(beacon_at: float, age_ms: float, window_seconds: int, washout_seconds: int) -> bool:
    """Whether a page view must be left out: loaded in the first ``washout_seconds``
    of a time window, or in an earlier window than the beacon's (the variant the
    beacon was logged with is not the one that served the page).

    Windows are the agent's (``probe.active_variant``): consecutive ``window_seconds``
    from the epoch. A wash-out after each switch keeps the previous variant's state
    (a browser's cached assets, a warm open-file cache, connections kept alive) and
    the few seconds the switch takes to apply out of the next variant's figures.
    """
    loaded_at = beacon_at - age_ms / 1000.0
    window = math.floor(loaded_at / window_seconds)
    if window != math.floor(beacon_at / window_seconds):
        return True
    return loaded_at - window * window_seconds < washout_seconds
