/* lookup.c: REMOTE_URL's name lookups, each on a detached thread of its
 * own. Not libuv's uv_getaddrinfo: a lookup running in libuv's pool cannot
 * be cancelled, and the loop (then libuv's exit, which joins the pool)
 * waits for it. A name whose DNS does not answer held SIGTERM's exit for
 * the resolver's whole timeout (9 s with timeout:5 attempts:2). Here a
 * lookup the agent no longer wants is abandoned: its thread frees it when
 * getaddrinfo returns, and the process may exit before that. */
#include <netdb.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "agent_int.h"

struct lookup_s {
    pthread_mutex_t mu;
    uv_async_t *async; /* the resolver's: signalled when done, unless abandoned */
    int abandoned;     /* the agent gave up on it: the thread frees it */
    int done;
    int status;        /* getaddrinfo's result (0 or EAI_*) */
    struct addrinfo *res;
    char host[256];
};

static void lookup_free(lookup_t *lk) {
    if (lk->res)
        freeaddrinfo(lk->res);
    pthread_mutex_destroy(&lk->mu);
    nw_free(lk);
}

static void *lookup_run(void *arg) {
    lookup_t *lk = arg;
    struct addrinfo hints, *res = NULL;
    int rc, gone;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    rc = getaddrinfo(lk->host, NULL, &hints, &res);
    pthread_mutex_lock(&lk->mu);
    lk->status = rc;
    lk->res = rc == 0 ? res : NULL;
    lk->done = 1;
    gone = lk->abandoned;
    if (!gone)
        uv_async_send(lk->async); /* under the lock: the handle is open */
    pthread_mutex_unlock(&lk->mu);
    if (gone)
        lookup_free(lk);
    return NULL;
}

lookup_t *lookup_start(const char *host, uv_async_t *async) {
    pthread_t th;
    pthread_attr_t at;
    lookup_t *lk = nw_calloc(1, sizeof(*lk));
    int rc;
    if (!lk)
        return NULL;
    snprintf(lk->host, sizeof(lk->host), "%s", host);
    lk->async = async;
    pthread_mutex_init(&lk->mu, NULL);
    pthread_attr_init(&at);
    pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
    rc = pthread_create(&th, &at, lookup_run, lk);
    pthread_attr_destroy(&at);
    if (rc != 0) {
        lookup_free(lk);
        return NULL;
    }
    return lk;
}

int lookup_take(lookup_t *lk, struct addrinfo **res, const char **why) {
    int done, status;
    pthread_mutex_lock(&lk->mu);
    done = lk->done;
    status = lk->status;
    *res = lk->res;
    lk->res = NULL;
    pthread_mutex_unlock(&lk->mu);
    if (!done)
        return 0;
    *why = status == 0 ? NULL : status == EAI_AGAIN ? "temporary failure"
                                : status == EAI_NONAME ? "unknown node or service"
                                                       : gai_strerror(status);
    lookup_free(lk);
    return 1;
}

void lookup_abandon(lookup_t *lk) {
    int done;
    pthread_mutex_lock(&lk->mu);
    done = lk->done;
    lk->abandoned = 1;
    pthread_mutex_unlock(&lk->mu);
    if (done) /* finished, its signal not yet handled: nobody else will free it */
        lookup_free(lk);
}
