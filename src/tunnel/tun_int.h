/* tun_int.h: what tun.c (the session), strm.c (its streams) and sched.c
 * (the order their DATA leaves in) share. */
#ifndef NW_TUN_INT_H
#define NW_TUN_INT_H

#include "tun.h"

/* DATA bytes the tunnel frames per hand-off to the connection (sched.c
 * fills a batch up to this; a stream sends straight into it below this). */
#define TUN_BATCH (128 * 1024)

/* tun.c */
int nw__tun_queue_frame2(nw_tun_t *t, const uint8_t *a, size_t alen, const uint8_t *b,
                         size_t blen);
int nw__tun_queue_frame(nw_tun_t *t, const uint8_t *p, size_t len);
void nw__tun_violation(nw_tun_t *t, const char *what, uint32_t sid);
void nw__tun_arm_flush(nw_tun_t *t);
/* May DATA be framed into the batch now? (No stream waits for its turn,
 * the connection has written everything handed to it, the batch has room.) */
int nw__tun_hungry(const nw_tun_t *t);

/* strm.c */
void nw__strm_flush(nw_strm_t *s);
int nw__strm_pull(nw_strm_t *s, size_t max);
void nw__strm_drained(nw_strm_t *s);
void nw__strm_orphan(nw_strm_t *s, int tell, uint32_t code);
void nw__strm_free(nw_strm_t *s);
int nw__strm_unsent(const nw_strm_t *s);
void nw__tun_dispatch(nw_tun_t *t, const uint8_t *msg, size_t len);

/* sched.c */
void nw__sched_add(nw_tun_t *t, nw_strm_t *s);
void nw__sched_del(nw_tun_t *t, nw_strm_t *s);
void nw__sched_fill(nw_tun_t *t, size_t limit);

#endif
