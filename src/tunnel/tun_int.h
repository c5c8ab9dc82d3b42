/* tun_int.h: what tun.c (the session) and strm.c (its streams) share. */
#ifndef NW_TUN_INT_H
#define NW_TUN_INT_H

#include "tun.h"

/* tun.c */
int nw__tun_queue_frame2(nw_tun_t *t, const uint8_t *a, size_t alen, const uint8_t *b,
                         size_t blen);
int nw__tun_queue_frame(nw_tun_t *t, const uint8_t *p, size_t len);
void nw__tun_violation(nw_tun_t *t, const char *what, uint32_t sid);

/* strm.c */
void nw__strm_flush(nw_strm_t *s);
void nw__strm_unblock_all(nw_tun_t *t);
void nw__strm_orphan(nw_strm_t *s, int tell, uint32_t code);
void nw__strm_free(nw_strm_t *s);
int nw__strm_unsent(const nw_strm_t *s);
void nw__tun_dispatch(nw_tun_t *t, const uint8_t *msg, size_t len);

#endif
