/* hint.c: the one warning that tells a user why a browser app refuses its
 * requests without PRESERVE_HOST. The agent sends LOCAL_URL's Host, so an
 * app that compares the browser's Origin (or Referer) with Host, as Jupyter
 * and Tornado do, sees every same-origin request as cross-site and refuses
 * it (403; Jupyter's API writes 404), while its pages and its token logins
 * work: nothing else would say which setting is missing. */
#include "agent_int.h"
#include "redirect.h"

void lreq_note_origin(lreq_t *r, const nw_mux_frame_t *f, const char *host, size_t hlen,
                      const char *proto, size_t plen) {
    const nw_hdr_t *origin = NULL, *referer = NULL;
    int tls;
    size_t i;

    if (r->ag->cfg->preserve_host || r->ag->origin_hinted || !proto ||
        nw_strieq(host, hlen, r->ag->host_hdr))
        return;
    tls = nw_strieq(proto, plen, "https");
    for (i = 0; i < f->nhdrs; i++) {
        const nw_hdr_t *h = &f->hdrs[i];
        if (!origin && NAME_IS(h, "origin"))
            origin = h;
        else if (!referer && NAME_IS(h, "referer"))
            referer = h;
    }
    /* A browser's same-origin request names the public origin in Origin
     * (WebSockets, writes); its other requests (GET) only in Referer. */
    if (origin)
        r->origin_pub =
            nw_redirect_origin_is(origin->value, origin->value_len, 0, tls, host, hlen) != 0;
    else if (referer)
        r->referer_pub =
            nw_redirect_origin_is(referer->value, referer->value_len, 1, tls, host, hlen) != 0;
}

void lreq_hint_refusal(lreq_t *r, unsigned st) {
    agent_t *ag = r->ag;
    /* 404 only with Origin: after a Referer it is mostly a broken link. */
    if (ag->origin_hinted || !((r->origin_pub && (st == 403 || st == 404)) ||
                               (r->referer_pub && st == 403)))
        return;
    ag->origin_hinted = 1;
    nw_warn("agent=%s the local service answered %u to a browser request whose %s is the public "
            "origin while its Host is LOCAL_URL's (%s): a service that compares the two "
            "(Jupyter, Tornado) needs PRESERVE_HOST=1 (logged once)",
            ag->cfg->agent_id, st, r->origin_pub ? "Origin" : "Referer", ag->host_hdr);
}
