/* remotes.c: the addresses the agent keeps tunnels to. Every URL of
 * REMOTE_URL is resolved (A and AAAA) at start and every RESOLVE_INTERVAL;
 * each address is a remote with MAX_CONN slots of its own (slot.c), dialled
 * by address with the URL's host name for Host, SNI and verification. A new
 * address gets its slots at once; one missing from REMOTE_MISSES answers in
 * a row has its tunnels drained: GOAWAY from the agent (serve opens no
 * stream on them), closed once their streams are done. (A name server that
 * answers a few of many records, a different few each time, drained and
 * redialled tunnels at every lookup when one miss was enough.) A failed
 * lookup keeps the current set. */
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "agent_int.h"

#define RETRY_MIN_MS 500
#define RETRY_MAX_MS 30000
#define REMOTE_MISSES 2 /* answers in a row without an address before it is drained */

static void resolve(resolver_t *rs);

static void on_retry(uv_timer_t *h) { resolve(h->data); }

/* A failed lookup is retried with backoff (0.5 s doubling to 30 s, never
 * later than RESOLVE_INTERVAL), so a name that does not resolve at start
 * is found soon after it does, even with RESOLVE_INTERVAL=0. */
static void retry_later(resolver_t *rs) {
    const nw_agent_cfg_t *cfg = rs->ag->cfg;
    uint64_t delay = (uint64_t)RETRY_MIN_MS << NW_MIN(rs->failures, 6u);
    rs->failures++;
    if (delay > RETRY_MAX_MS)
        delay = RETRY_MAX_MS;
    if (cfg->resolve_interval_ms && delay >= cfg->resolve_interval_ms)
        return; /* the interval comes first */
    nw_debug("agent=%s resolving %s again in %.1fs", cfg->agent_id, cfg->remotes.u[rs->url].host,
             (double)delay / 1000.0);
    uv_timer_start(&rs->retry, on_retry, delay, 0);
}

static void url_label(remote_t *rem, const nw_url_t *u) {
    int v6 = strchr(u->host, ':') != NULL;
    snprintf(rem->url_str, sizeof(rem->url_str), "%s://%s%s%s:%u", u->tls ? "wss" : "ws",
             v6 ? "[" : "", u->host, v6 ? "]" : "", u->port);
    snprintf(rem->label, sizeof(rem->label), "%.1300s (%.45s)", rem->url_str, rem->addr);
}

static slot_t *rem_slots(agent_t *ag, const remote_t *rem) {
    return &ag->slots[(size_t)(rem - ag->remotes) * ag->cfg->max_conn];
}

/* Tunnels of a gone address, once their streams are done, close (after
 * each loop turn's I/O, outside every tunnel callback). The agent sends
 * GOAWAY only on a tunnel it retires (remote_drop) or when stopping (and
 * then this stops): a tunnel that sent one is retiring, no slot holds it.
 * No look through the slots per tunnel: with MAX_REMOTES x MAX_CONN
 * slots that cost each loop turn 15 times the agent's CPU under load. */
static void on_reap(uv_check_t *h) {
    agent_t *ag = h->data;
    size_t i;
    unsigned left = 0;
    if (ag->stopping) {
        uv_check_stop(h);
        return;
    }
    for (i = 0; i < ag->ntuns; i++) {
        nw_tun_t *t = ag->tuns[i];
        if (!t->goaway_sent || nw_tun_closing(t))
            continue;
        if (t->nstreams)
            left++;
        else
            nw_tun_shutdown(t);
    }
    if (!left)
        uv_check_stop(h);
}

static void remote_drop(agent_t *ag, remote_t *rem) {
    slot_t *sl = rem_slots(ag, rem);
    unsigned k;
    nw_info("agent=%s remote=%s is gone from DNS: draining its tunnels", ag->cfg->agent_id,
            rem->label);
    for (k = 0; k < ag->cfg->max_conn; k++, sl++) {
        slot_cancel(sl);
        if (sl->tun) {
            nw_tun_goaway(sl->tun, 0);
            sl->tun = NULL; /* retiring: closed by on_reap when its streams are done */
        }
        sl->rem = NULL;
    }
    rem->used = 0;
    uv_check_start(&ag->reap, on_reap);
}

static remote_t *remote_add(agent_t *ag, unsigned url, const char *addr) {
    unsigned i, k;
    remote_t *rem = NULL;
    slot_t *sl;
    for (i = 0; i < ag->cfg->max_remotes && !rem; i++)
        if (!ag->remotes[i].used)
            rem = &ag->remotes[i];
    if (!rem)
        return NULL;
    rem->used = 1;
    rem->missed = 0;
    rem->url = url;
    snprintf(rem->addr, sizeof(rem->addr), "%.45s", addr);
    slot_random_hex(rem->key);
    url_label(rem, &ag->cfg->remotes.u[url]);
    sl = rem_slots(ag, rem);
    for (k = 0; k < ag->cfg->max_conn; k++) {
        sl[k].rem = rem;
        sl[k].attempt = 0;
        sl[k].up_since = 0;
        sl[k].since = 0;
        sl[k].last_error[0] = 0;
        sl[k].granted.len = 0;
    }
    if (ag->nremotes_seen++)
        nw_info("agent=%s remote=%s is new: connecting", ag->cfg->agent_id, rem->label);
    for (k = 0; k < ag->cfg->max_conn; k++)
        slot_connect(&sl[k]);
    return rem;
}

static int addr_str(const struct addrinfo *ai, char *out, size_t cap) {
    if (ai->ai_family == AF_INET)
        return uv_ip4_name((const struct sockaddr_in *)(const void *)ai->ai_addr, out, cap);
    if (ai->ai_family == AF_INET6)
        return uv_ip6_name((const struct sockaddr_in6 *)(const void *)ai->ai_addr, out, cap);
    return -1;
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The lookup of rs's URL answered addrs (n > 0): drop the remotes missing
 * from REMOTE_MISSES answers in a row, add the new ones (MAX_REMOTES
 * permitting: a remote missing from one answer keeps its room, or answers
 * that each name a different few of many addresses would trade tunnels). */
static void apply_addrs(resolver_t *rs, char (*addrs)[INET6_ADDRSTRLEN], unsigned n) {
    agent_t *ag = rs->ag;
    const nw_url_t *u = &ag->cfg->remotes.u[rs->url];
    char left[600] = "";
    const char *out[NW_RESOLVE_MAX];
    unsigned i, j, nout = 0;

    nw_debug("agent=%s %s resolved: %u address(es)", ag->cfg->agent_id, u->host, n);
    /* Gone first, so their room goes to the new ones. */
    for (i = 0; i < ag->cfg->max_remotes; i++) {
        remote_t *rem = &ag->remotes[i];
        if (!rem->used || rem->url != rs->url)
            continue;
        for (j = 0; j < n && strcmp(addrs[j], rem->addr) != 0; j++)
            ;
        if (j < n)
            rem->missed = 0;
        else if (++rem->missed >= REMOTE_MISSES)
            remote_drop(ag, rem);
        else
            nw_debug("agent=%s remote=%s is missing from this answer: kept until it misses %d",
                     ag->cfg->agent_id, rem->label, REMOTE_MISSES);
    }
    for (j = 0; j < n; j++) {
        for (i = 0; i < ag->cfg->max_remotes; i++) {
            const remote_t *rem = &ag->remotes[i];
            if (rem->used && rem->url == rs->url && strcmp(rem->addr, addrs[j]) == 0)
                break;
        }
        if (i < ag->cfg->max_remotes || remote_add(ag, rs->url, addrs[j]))
            continue;
        out[nout++] = addrs[j];
    }
    /* In a set order: a round-robin answer names them in another order
     * each time, which is no change worth a warning. */
    qsort(out, nout, sizeof(out[0]), cmp_str);
    for (j = 0; j < nout; j++)
        if (strlen(left) + strlen(out[j]) + 3 < sizeof(left))
            snprintf(left + strlen(left), sizeof(left) - strlen(left), "%s%.45s",
                     left[0] ? ", " : "", out[j]);
    if (left[0] && strcmp(left, rs->left_out) != 0)
        nw_warn("agent=%s MAX_REMOTES=%u reached: no tunnels to %s of %s", ag->cfg->agent_id,
                ag->cfg->max_remotes, left, u->host);
    snprintf(rs->left_out, sizeof(rs->left_out), "%s", left);
}

static void on_resolved(resolver_t *rs, struct addrinfo *res, const char *fail) {
    agent_t *ag = rs->ag;
    const nw_url_t *u = &ag->cfg->remotes.u[rs->url];
    char addrs[NW_RESOLVE_MAX][INET6_ADDRSTRLEN];
    unsigned n = 0, j;
    const struct addrinfo *ai;

    if (ag->stopping) {
        if (res)
            freeaddrinfo(res);
        return;
    }
    for (ai = res; ai && !n; ai = ai->ai_next)
        n = ai->ai_family == AF_INET || ai->ai_family == AF_INET6;
    if (!n) { /* also an answer without addresses: keep what we have */
        char why[200];
        snprintf(why, sizeof(why), "%s", fail ? fail : "no address");
        if (strcmp(why, rs->last_error) != 0) /* once per change, not every interval */
            nw_warn("agent=%s cannot resolve %s: %s; keeping the current addresses",
                    ag->cfg->agent_id, u->host, why);
        snprintf(rs->last_error, sizeof(rs->last_error), "%s", why);
        if (res)
            freeaddrinfo(res);
        retry_later(rs);
        return;
    }
    n = 0;
    rs->failures = 0;
    if (rs->last_error[0])
        nw_info("agent=%s %s resolves again", ag->cfg->agent_id, u->host);
    rs->last_error[0] = 0;
    for (ai = res; ai && n < NW_RESOLVE_MAX; ai = ai->ai_next) {
        if (addr_str(ai, addrs[n], sizeof(addrs[n])) != 0)
            continue;
        for (j = 0; j < n && strcmp(addrs[j], addrs[n]) != 0; j++)
            ;
        if (j == n)
            n++;
    }
    freeaddrinfo(res);
    apply_addrs(rs, addrs, n);
}

static void on_lookup_done(uv_async_t *h) {
    resolver_t *rs = h->data;
    struct addrinfo *res = NULL;
    const char *why = NULL;
    if (!rs->lk || !lookup_take(rs->lk, &res, &why))
        return;
    rs->lk = NULL;
    on_resolved(rs, res, why);
}

/* An IP address as the URL's host is its own answer: no lookup (which
 * would wait in the thread pool behind lookups of other names), once. */
static int literal(resolver_t *rs) {
    const char *host = rs->ag->cfg->remotes.u[rs->url].host;
    char addrs[1][INET6_ADDRSTRLEN];
    unsigned char bin[16];
    int fam = strchr(host, ':') ? AF_INET6 : AF_INET;
    if (uv_inet_pton(fam, host, bin) != 0 || uv_inet_ntop(fam, bin, addrs[0], sizeof(addrs[0])))
        return 0;
    if (!rs->literal_done)
        apply_addrs(rs, addrs, 1);
    rs->literal_done = 1;
    return 1;
}

static void resolve(resolver_t *rs) {
    agent_t *ag = rs->ag;
    if (rs->lk || ag->stopping || literal(rs))
        return;
    rs->lk = lookup_start(ag->cfg->remotes.u[rs->url].host, &rs->async);
    if (rs->lk) {
        uv_timer_stop(&rs->retry);
        return;
    }
    nw_warn("agent=%s cannot start resolving %s: out of memory or threads", ag->cfg->agent_id,
            ag->cfg->remotes.u[rs->url].host);
    retry_later(rs);
}

static void on_interval(uv_timer_t *h) {
    agent_t *ag = h->data;
    unsigned u;
    for (u = 0; u < ag->cfg->remotes.n; u++)
        resolve(&ag->resolvers[u]);
}

void remotes_init(agent_t *ag) {
    unsigned u;
    slot_random_hex(ag->instance);
    uv_timer_init(ag->loop, &ag->rtimer);
    ag->rtimer.data = ag;
    uv_check_init(ag->loop, &ag->reap);
    ag->reap.data = ag;
    for (u = 0; u < ag->cfg->remotes.n; u++) {
        ag->resolvers[u].ag = ag;
        ag->resolvers[u].url = u;
        uv_timer_init(ag->loop, &ag->resolvers[u].retry);
        ag->resolvers[u].retry.data = &ag->resolvers[u];
        uv_async_init(ag->loop, &ag->resolvers[u].async, on_lookup_done);
        ag->resolvers[u].async.data = &ag->resolvers[u];
    }
}

void remotes_start(agent_t *ag) {
    on_interval(&ag->rtimer);
    if (ag->cfg->resolve_interval_ms)
        uv_timer_start(&ag->rtimer, on_interval, ag->cfg->resolve_interval_ms,
                       ag->cfg->resolve_interval_ms);
}

void remotes_stop(agent_t *ag) {
    unsigned u;
    uv_timer_stop(&ag->rtimer);
    uv_check_stop(&ag->reap);
    for (u = 0; u < ag->cfg->remotes.n; u++) {
        uv_timer_stop(&ag->resolvers[u].retry);
        if (ag->resolvers[u].lk) /* its thread frees it; exit need not wait */
            lookup_abandon(ag->resolvers[u].lk);
        ag->resolvers[u].lk = NULL;
    }
}

void remotes_close(agent_t *ag) {
    unsigned u;
    remotes_stop(ag);
    for (u = 0; u < ag->cfg->remotes.n; u++) {
        uv_close((uv_handle_t *)&ag->resolvers[u].retry, NULL);
        uv_close((uv_handle_t *)&ag->resolvers[u].async, NULL);
    }
    uv_close((uv_handle_t *)&ag->rtimer, NULL);
    uv_close((uv_handle_t *)&ag->reap, NULL);
}
