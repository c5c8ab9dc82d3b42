/* routing.c: which tunnel serves a request. The route table of serve
 * (routes.c holds the pure model): a tunnel's routes go in when it opens
 * and out when it closes or loses its grant, a route left without tunnels
 * is held for --route-hold, and a request is matched by its host and path,
 * then given to one of the route's tunnels by --balance, among those whose
 * Basic credentials (AUTH_BASIC) it carries. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "basic.h"
#include "http1.h"
#include "log.h"
#include "path.h"
#include "serve_int.h"
#include "tokens.h"

#define SWEEP_MS 1000 /* how often held routes and revoked tunnels are checked */

static void rt_on_sweep(uv_timer_t *h);

/* The default route's entry exists from the start, held: a request that
 * comes before the first agent waits for it, as it always did. */
int rt_init(serve_t *srv) {
    nw_route_t def;
    srv->routes = nw_routes_new();
    if (!srv->routes)
        return NW_ENOMEM;
    nw_route_default(&def);
    if (nw_routes_add(srv->routes, &def, srv) != 0)
        return NW_ENOMEM;
    nw_routes_remove(srv->routes, &def, srv);
    uv_timer_init(srv->loop, &srv->sweep);
    srv->sweep.data = srv;
    return 0;
}

static const char *rt_name(const nw_route_t *r, char *buf, size_t cap) {
    nw_route_format(r, buf, cap);
    return buf;
}

/* Put the tunnel's routes in the table. A server whose first routes are
 * named ones has no default service: its held default entry goes, so an
 * unclaimed host gets 404 at once instead of waiting for one. */
int rt_attach(srv_tun_t *st) {
    serve_t *srv = st->srv;
    char name[NW_ROUTE_HOST_MAX + NW_ROUTE_PATH_MAX + 8];
    size_t i;
    for (i = 0; i < st->nroutes; i++) {
        const nw_route_t *r = &st->routes[i];
        if (r->is_default) {
            srv->default_owned = 1;
        } else if (!srv->default_owned) {
            nw_route_t def;
            nw_route_default(&def);
            nw_routes_drop(srv->routes, &def);
        }
        if (nw_routes_add(srv->routes, r, st) != 0) {
            while (i--)
                nw_routes_remove(srv->routes, &st->routes[i], st);
            return NW_ENOMEM;
        }
        nw_info("route %s +tun=%llu agent=%s", rt_name(r, name, sizeof(name)),
                (unsigned long long)st->tun->id, st->tun->agent);
    }
    st->attached = 1;
    wq_kick(srv);
    return 0;
}

/* Held named routes beyond what --max-tunnels live tunnels could hold
 * go, oldest first: a token that grants a wildcard grants endless names,
 * and each tunnel of 64 fresh ones left 64 entries for --route-hold (the
 * table, and the lookup every request pays, grew with every handshake). */
static void rt_trim_held(serve_t *srv) {
    char name[NW_ROUTE_HOST_MAX + NW_ROUTE_PATH_MAX + 8];
    size_t cap = (size_t)srv->cfg->max_tunnels * NW_ROUTES_MAX, held = 0, i, n = 0;
    for (i = 0; i < nw_routes_count(srv->routes); i++) {
        nw_route_hit_t e = nw_routes_at(srv->routes, i);
        held += !e.route->is_default && e.nowners == 0;
    }
    for (; held > cap; held--, n++) {
        nw_route_hit_t old = {NULL, NULL, 0, 0};
        for (i = 0; i < nw_routes_count(srv->routes); i++) {
            nw_route_hit_t e = nw_routes_at(srv->routes, i);
            if (!e.route->is_default && e.nowners == 0 && (!old.route || e.mark < old.mark))
                old = e;
        }
        rt_name(old.route, name, sizeof(name));
        nw_routes_drop(srv->routes, old.route);
    }
    if (n) {
        nw_warn("%zu held route(s) dropped, the oldest %s: more held routes than --max-tunnels "
                "tunnels could serve", n, name);
        wq_kick(srv);
    }
}

/* Take the tunnel's routes out of the table. A route left without a
 * tunnel stays, held, so that its requests wait for the agent to return
 * (rt_on_sweep drops it after --route-hold). */
void rt_detach(srv_tun_t *st, const char *why) {
    serve_t *srv = st->srv;
    char name[NW_ROUTE_HOST_MAX + NW_ROUTE_PATH_MAX + 8];
    size_t i;
    int held = 0;
    if (!st->attached)
        return;
    st->attached = 0;
    for (i = 0; i < st->nroutes; i++) {
        const nw_route_t *r = &st->routes[i];
        int left = nw_routes_remove(srv->routes, r, st);
        if (left == 0) {
            nw_routes_set_mark(srv->routes, r, uv_now(srv->loop));
            held |= !r->is_default;
        }
        nw_info("route %s -tun=%llu agent=%s (%s; %s)", rt_name(r, name, sizeof(name)),
                (unsigned long long)st->tun->id, st->tun->agent, why,
                left == 0 ? "held" : "other tunnels serve it");
    }
    if (held) {
        rt_trim_held(srv);
        rt_sweep_start(srv);
    }
}

void rt_sweep_start(serve_t *srv) {
    if (!srv->stopping && !uv_is_active((uv_handle_t *)&srv->sweep))
        uv_timer_start(&srv->sweep, rt_on_sweep, SWEEP_MS, SWEEP_MS);
}

/* A held named route whose hold is over. The default route is never
 * dropped once a tunnel served it: it is the server's own service. */
static int rt_expired(const serve_t *srv, const nw_route_hit_t *h, uint64_t now) {
    return h->route && !h->route->is_default && h->nowners == 0 &&
           now - h->mark >= srv->cfg->route_hold_ms;
}

/* Once a second while something waits for time: drop held routes whose
 * hold is over, and close revoked tunnels that finished their streams or
 * outlived --grace. */
static void rt_on_sweep(uv_timer_t *h) {
    serve_t *srv = h->data;
    uint64_t now = uv_now(srv->loop);
    char name[NW_ROUTE_HOST_MAX + NW_ROUTE_PATH_MAX + 8];
    size_t i;
    int more = 0;
    for (i = 0; i < nw_routes_count(srv->routes);) {
        nw_route_hit_t e = nw_routes_at(srv->routes, i);
        if (rt_expired(srv, &e, now)) {
            nw_info("route %s dropped: no tunnel came back within --route-hold",
                    rt_name(e.route, name, sizeof(name)));
            nw_routes_drop(srv->routes, e.route); /* the last entry moves to i */
            wq_kick(srv);
            continue;
        }
        more |= e.route && !e.route->is_default && e.nowners == 0;
        i++;
    }
    /* From the end: closing a tunnel removes it at once, moving the last
     * one into its place. */
    for (i = srv->ntuns; i-- > 0;) {
        nw_tun_t *t = srv->tuns[i];
        srv_tun_t *st = t->data;
        if (!st->revoked || nw_tun_closing(t))
            continue;
        /* --grace bounds both the streams and the agent's answer to our
         * close frame: an agent that never answers it kept the tunnel (and
         * its slot under --max-tunnels) for good. */
        if (now - st->revoked_at >= srv->cfg->grace_ms) {
            if (t->active)
                nw_warn("tunnel tun=%llu agent=%s revoked: %zu stream(s) still open after "
                        "--grace, closing", (unsigned long long)t->id, t->agent, t->active);
            else
                nw_warn("tunnel tun=%llu agent=%s revoked: no close from the agent within "
                        "--grace, closing", (unsigned long long)t->id, t->agent);
            nw_tun_close(t, NW_ECLOSED);
            continue;
        }
        if (t->active == 0 && !st->revoked_shut) {
            nw_info("tunnel tun=%llu agent=%s revoked: its streams are done, closing",
                    (unsigned long long)t->id, t->agent);
            st->revoked_shut = 1;
            nw_tun_shutdown(t);
        }
        more = 1;
    }
    if (!more)
        uv_timer_stop(&srv->sweep);
}

/* The live entry for host and path (a held route whose hold is over is
 * dropped on the way, in case the sweep has not come yet). */
static nw_route_hit_t rt_lookup(serve_t *srv, const char *h, size_t hl, const char *path,
                                size_t plen) {
    nw_route_hit_t hit;
    for (;;) {
        hit = nw_routes_lookup(srv->routes, h, hl, path, plen);
        if (!rt_expired(srv, &hit, uv_now(srv->loop)))
            return hit;
        nw_routes_drop(srv->routes, hit.route);
    }
}

/* The request's route: its host (the authority of an absolute-form
 * target, else Host; RFC 9112 3.2.2) and its normalised path, the one the
 * service resolves (so "/%61pi" routes as "/api"). host gets the name for
 * a 404 (printable, capped). 0; NW_EINVAL when the path's readings fall on
 * different routes; or NW_ENOMEM.
 * The target goes to the service as sent, and not every service resolves
 * dot segments before it routes (Express's app.use("/admin") takes
 * "/admin/../x"): a path that is another route's with its dots kept must
 * not go, unauthenticated, to the route its resolved reading names. */
int rt_route_of(pconn_t *pc, nw_route_hit_t *hit, char *host, size_t hostcap) {
    serve_t *srv = pc->srv;
    const char *target, *h = "";
    char small[2048], *path, *dots;
    size_t tlen, hl = 0, plen = 0, dlen = 0, i, k;
    nw_route_hit_t kept;
    nw_hdr_t f;
    int hi, rc = 0;

    target = pc->hf.raw.p ? pc->hf.raw.p : "";
    tlen = pc->hf.first_len;
    if ((h = nw_http_authority(target, tlen, &hl)) == NULL) {
        h = "";
        if ((hi = nw_hf_find(&pc->hf, "host", 0)) >= 0) {
            nw_hf_get(&pc->hf, (size_t)hi, &f);
            h = f.value, hl = f.value_len;
        }
    }
    {
        /* For a 404: the name routes matched (lowercase, no port), or for
         * an IP literal the host as sent, printable and capped. */
        char name[NW_ROUTE_HOST_MAX + 1];
        int nl = nw_route_req_host(h, hl, name);
        const char *shown = nl >= 0 ? name : h;
        size_t sl = nl >= 0 ? (size_t)nl : hl;
        for (i = k = 0; i < sl && k + 1 < hostcap; i++)
            host[k++] = shown[i] > 0x20 && shown[i] < 0x7f ? shown[i] : '?';
        host[k] = 0;
    }
    path = 2 * (tlen + 2) <= sizeof(small) ? small : nw_malloc(2 * (tlen + 2));
    if (!path)
        return NW_ENOMEM;
    if (nw_path_normalize(target, tlen, 0, path, tlen + 2, &plen) < 0)
        plen = 0; /* "*": the host's root */
    *hit = rt_lookup(srv, h, hl, path, plen);
    dots = path + tlen + 2;
    if (nw_path_normalize(target, tlen, NW_PATH_KEEP_DOTS, dots, tlen + 2, &dlen) < 0)
        dlen = 0;
    if ((dlen != plen || memcmp(dots, path, plen) != 0) && /* dot segments (rare): */
        (kept = rt_lookup(srv, h, hl, dots, dlen)).route != hit->route)
        rc = NW_EINVAL;
    if (path != small)
        nw_free(path);
    return rc;
}

/* The index + 1 of the request's Basic credential that one of st's
 * credentials equals, or 0. cred/clen: the first Basic credential of the
 * request, decoded (clen 0: none). */
static int rt_cred_ok(const srv_tun_t *st, const char *cred, size_t clen) {
    size_t i;
    int ok = 0;
    for (i = 0; i < st->ncreds; i++) /* no early exit: the time says nothing */
        ok |= clen && srv_token_eq(cred, clen, st->creds[i].p, st->creds[i].n);
    return ok;
}

/* The first Authorization field with a well-formed Basic credential:
 * decoded into buf (cap bytes), its length, and the field's index + 1. */
static size_t rt_basic_of(const pconn_t *pc, char *buf, size_t cap, unsigned *field) {
    nw_hdr_t f;
    const char *pass;
    size_t plen;
    int i = -1;
    *field = 0;
    while ((i = nw_hf_find(&pc->hf, "authorization", (size_t)(i + 1))) >= 0) {
        nw_hf_get(&pc->hf, (size_t)i, &f);
        if (NW_BASIC_CAP(f.value_len) > cap)
            continue; /* longer than any credential a tunnel holds */
        if (nw_basic_parse(f.value, f.value_len, buf, cap, &pass, &plen) == NW_BASIC_OK) {
            *field = (unsigned)i + 1;
            return (size_t)(pass + plen - buf);
        }
    }
    return 0;
}

/* FNV-1a over the client address and the tunnel's name: rendezvous
 * hashing, so a client keeps its tunnel while others come and go, and a
 * reconnecting agent (same name) gets its clients back. */
static uint64_t hrw(const char *ip, size_t iplen, const char *name) {
    uint64_t h = 1469598103934665603ull;
    size_t i;
    for (i = 0; i < iplen; i++)
        h = (h ^ (unsigned char)ip[i]) * 1099511628211ull;
    h = (h ^ 0xff) * 1099511628211ull;
    for (; *name; name++)
        h = (h ^ (unsigned char)*name) * 1099511628211ull;
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    return h ^ (h >> 33);
}

/* A tunnel of the route with a free stream slot, by --balance, among
 * those whose credentials the request carries; or NULL, with *any set when
 * a usable tunnel exists at all (then the caller may wait for a slot).
 * When every usable tunnel wants a Basic credential the request lacks,
 * NULL with *any 0 and pc->realm set: the caller answers 401. */
nw_tun_t *rt_pick(pconn_t *pc, const nw_route_hit_t *hit, const char *ip, size_t iplen,
                  int *any) {
    serve_t *srv = pc->srv;
    char cred[768];
    unsigned field;
    size_t clen = 0, i, n = hit->nowners, bi = 0;
    nw_tun_t *best = NULL;
    uint64_t best_score = 0;
    int locked = 0, checked = 0, guarded = 0;

    *any = 0;
    pc->realm[0] = 0;
    pc->route_auth = 0;
    /* A route that one of its tunnels protects is protected: a tunnel of
     * it without AUTH_BASIC (a replica set up without the logins) must not
     * be the open door, so it gets no requests while such a one is there. */
    for (i = 0; i < n; i++)
        guarded |= ((const srv_tun_t *)hit->owners[i])->ncreds != 0;
    for (i = 0; i < n; i++) {
        size_t k = (srv->rr + i) % n;
        srv_tun_t *st = hit->owners[k];
        nw_tun_t *t = st->tun;
        if (!reg_tun_usable(t))
            continue;
        if (guarded && !st->ncreds) {
            locked = 1;
            continue;
        }
        if (st->ncreds) {
            if (!checked)
                clen = rt_basic_of(pc, cred, sizeof(cred), &field), checked = 1;
            if (!rt_cred_ok(st, cred, clen)) {
                locked = 1;
                continue;
            }
            pc->route_auth = field;
        }
        *any = 1;
        if (t->active >= srv->cfg->max_streams)
            continue;
        if (srv->cfg->balance == NW_BALANCE_HASH_IP) {
            uint64_t sc = hrw(ip, iplen, t->agent);
            if (!best || sc > best_score)
                best = t, best_score = sc, bi = k;
        } else if (srv->cfg->balance == NW_BALANCE_ROUND_ROBIN) {
            best = t, bi = k;
            break;
        } else if (!best || t->active < best->active) {
            best = t, bi = k; /* fewest in flight; ties rotate */
        }
    }
    if (best)
        srv->rr = bi + 1;
    if (!*any && locked)
        nw_route_format(hit->route, pc->realm, sizeof(pc->realm));
    return best;
}

/* /readyz?host=: the route a request for host and path (as a client
 * sends them) takes, its name into name, and how many of its tunnels take
 * streams. -1: no route (a request gets 404); -2: a path that does not
 * normalise. */
int rt_ready(serve_t *srv, const char *host, size_t hl, const char *path, size_t pl, char *name,
             size_t cap) {
    char norm[NW_ROUTE_PATH_MAX * 2 + 8];
    size_t nl, k;
    int up = 0;
    nw_route_hit_t hit;
    if (path[0] != '/' || nw_path_normalize(path, pl, 0, norm, sizeof(norm), &nl) < 0)
        return -2;
    hit = rt_lookup(srv, host, hl, norm, nl);
    if (!hit.route)
        return -1;
    nw_route_format(hit.route, name, cap);
    for (k = 0; k < hit.nowners; k++)
        up += reg_tun_usable(((const srv_tun_t *)hit.owners[k])->tun);
    return up;
}

/* After the tokens changed (SIGHUP): a tunnel whose token is gone, or
 * no longer grants one of its routes, loses all of them now (new requests
 * wait for another tunnel, as for a route held), gets GOAWAY, and closes
 * once its streams are done or --grace is over (rt_on_sweep). */
void rt_regrant(serve_t *srv) {
    char name[NW_ROUTE_HOST_MAX + NW_ROUTE_PATH_MAX + 8], msg[sizeof(name) + 48];
    size_t i, k;
    for (i = 0; i < srv->ntuns; i++) {
        nw_tun_t *t = srv->tuns[i];
        srv_tun_t *st = t->data;
        const char *why = NULL;
        int line = -1;
        if (st->revoked || nw_tun_closing(t) || !srv->tokens)
            continue;
        if (!st->token || (line = nw_tokens_find(srv->tokens, st->token, st->toklen)) < 0)
            why = "its token was removed";
        for (k = 0; !why && k < st->nroutes; k++)
            if (!nw_tokens_grants(srv->tokens, line, &st->routes[k])) {
                snprintf(msg, sizeof(msg), "its token no longer grants route %s",
                         rt_name(&st->routes[k], name, sizeof(name)));
                why = msg;
            }
        if (!why)
            continue;
        nw_warn("tunnel tun=%llu agent=%s revoked: %s: GOAWAY, closing within --grace",
                (unsigned long long)t->id, t->agent, why);
        st->revoked = 1;
        st->revoked_at = uv_now(srv->loop);
        rt_detach(st, "revoked");
        nw_tun_goaway(t, 0);
        rt_sweep_start(srv);
    }
}

/* The public URL of route r: "https://a.example.com/api". */
size_t rt_public_url(const nw_route_t *r, int https, char *out, size_t cap) {
    int n = snprintf(out, cap, "%s://", https ? "https" : "http");
    if (n < 0 || (size_t)n >= cap)
        return 0;
    return (size_t)n + nw_route_format(r, out + n, cap - (size_t)n);
}
