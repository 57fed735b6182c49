# Varnish in front of data-api (--edge-max-age): keeps item and list answers for as long as
# the service's Surrogate-Control says, and drops them when a replica purges their surrogate
# keys (xkey, from Debian's varnish-modules). See docs/EDGE.md.
#
# What differs by deployment is in site.vcl, next to this file: the backends (data-api replicas,
# or a load balancer in front of them), `sub data_api_backend` choosing one, and the `purgers`
# ACL of the addresses the replicas purge from. varnish/site.vcl is docker-compose.yml's.
vcl 4.1;

import std;
import xkey;

include "site.vcl";

sub vcl_recv {
    if (req.method == "PURGE") {
        if (client.ip !~ purgers) {
            return (synth(403, "purges only from the replicas"));
        }
        if (!req.http.xkey-purge) {
            return (synth(400, "xkey-purge names the keys to purge"));
        }
        set req.http.n-gone = xkey.purge(req.http.xkey-purge);
        return (synth(200, "purged " + req.http.n-gone));
    }
    call data_api_backend;
    # Tells the service this request is an edge cache's (RFC 8586): a miss is read from the
    # primary, never from a replica's cache that may not have heard of a write yet.
    if (req.http.CDN-Loop) {
        set req.http.CDN-Loop = req.http.CDN-Loop + ", varnish";
    } else {
        set req.http.CDN-Loop = "varnish";
    }
    if (req.method != "GET" && req.method != "HEAD") {
        return (pass);
    }
    # Only the reads the service marks as cacheable; everything else goes straight through.
    if (req.url !~ "^/data(/[0-9]+)?(\?.*)?$") {
        return (pass);
    }
    unset req.http.Cookie;
    return (hash);
}

sub vcl_backend_response {
    # The service's word on the edge: Surrogate-Control max-age=N, or no-store while its purges
    # fail (then nothing is kept, and what is kept ages out within N).
    if (beresp.http.Surrogate-Control ~ "max-age=[0-9]+") {
        set beresp.ttl = std.duration(
            regsub(beresp.http.Surrogate-Control, ".*max-age=([0-9]+).*", "\1s"), 0s);
        # Never serve past the TTL (grace would answer an object older than the service allows).
        set beresp.grace = 0s;
        # xkey indexes objects by the `xkey` header: the service's Surrogate-Key.
        set beresp.http.xkey = beresp.http.Surrogate-Key;
        set beresp.keep = 0s;
        return (deliver);
    }
    set beresp.uncacheable = true;
    set beresp.ttl = 0s;
    return (deliver);
}

sub vcl_deliver {
    # The keys and the edge's own cache-control are for this cache, not for clients.
    unset resp.http.Surrogate-Key;
    unset resp.http.Surrogate-Control;
    unset resp.http.CDN-Cache-Control;
    unset resp.http.Cache-Tag;
    unset resp.http.xkey;
}
