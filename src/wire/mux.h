/* mux.h: pure pack/unpack of natwrp tunnel frames (docs/protocol.md).
 * No I/O and no libuv: the tunnel feeds complete WebSocket message
 * payloads in and queues packed frames out. */
#ifndef NW_MUX_H
#define NW_MUX_H

#include "nw.h"

enum nw_mux_type {
    NW_MUX_OPEN = 1,   /* server -> agent: request head, opens a stream */
    NW_MUX_HEAD = 2,   /* agent -> server: response head */
    NW_MUX_DATA = 3,   /* body bytes, either direction */
    NW_MUX_WINDOW = 4, /* flow-control credit, either direction */
    NW_MUX_RST = 5,    /* abort a stream, either direction */
    NW_MUX_GOAWAY = 6  /* no new streams on this tunnel */
};

#define NW_MUX_F_END 0x01 /* sender will send no more DATA on this stream */
/* An interim response status (RFC 9110 15.2: 102 Processing, 103 Early
 * Hints, ...): a HEAD with it comes before the stream's one final HEAD.
 * 101 is final: the stream becomes a pipe. */
#define NW_MUX_INTERIM(st) ((st) >= 100 && (st) < 200 && (st) != 101)
#define NW_MUX_FRAME_HDR 6 /* type(1) flags(1) stream(4) */
#define NW_MUX_MAX_FRAME (256 * 1024) /* whole frame, header included */
#define NW_MUX_MAX_DATA (64 * 1024)   /* DATA payload a sender may put in one frame */
#define NW_MUX_MAX_HDRS 256           /* header fields in one OPEN/HEAD */
#define NW_MUX_MAX_WINDOW 0x7fffffffu

/* Reset codes (RST and GOAWAY). */
enum nw_mux_code {
    NW_RST_CANCEL = 1,        /* the requester went away */
    NW_RST_CONNECT = 2,       /* agent could not reach the local service */
    NW_RST_UPSTREAM = 3,      /* local service failed or sent a bad response */
    NW_RST_PROTOCOL = 4,      /* peer broke the protocol on this stream */
    NW_RST_FLOW = 5,          /* peer exceeded its credit */
    NW_RST_REFUSED = 6,       /* not processed at all; safe to retry */
    NW_RST_INTERNAL = 7,      /* local failure, e.g. out of memory */
    NW_RST_TIMEOUT = 8,       /* gave up waiting */
    NW_RST_TOOBIG = 9         /* head too large to forward */
};

typedef struct {
    const char *name;
    size_t name_len;
    const char *value;
    size_t value_len;
} nw_hdr_t;

typedef struct {
    uint8_t type;
    uint8_t flags;
    uint32_t sid;
    /* OPEN */
    const char *method;
    size_t method_len;
    const char *target;
    size_t target_len;
    /* HEAD */
    uint16_t status;
    const char *reason;
    size_t reason_len;
    /* OPEN and HEAD: fields point into the decoded buffer */
    nw_hdr_t *hdrs;
    size_t nhdrs;
    /* DATA */
    const uint8_t *data;
    size_t data_len;
    /* WINDOW: increment; RST and GOAWAY: code */
    uint32_t value;
    /* GOAWAY: highest stream id the sender will still process */
    uint32_t last_sid;
} nw_mux_frame_t;

/* Decode one frame occupying exactly buf[0..len). Header fields are written
 * to hdrs (capacity max_hdrs) and f->hdrs points at it. Returns 0, NW_ETRUNC
 * when the payload is shorter than its fields say, NW_EPROTO for any other
 * malformation (unknown type, trailing bytes, zero/non-zero stream id where
 * forbidden, zero window, bad status), NW_ETOOBIG when len exceeds
 * NW_MUX_MAX_FRAME or there are more than max_hdrs headers. */
int nw_mux_decode(const uint8_t *buf, size_t len, nw_mux_frame_t *f, nw_hdr_t *hdrs,
                  size_t max_hdrs);

/* Encoders write into out (capacity cap) and return the frame length, or
 * NW_ENOSPC if it does not fit, NW_ETOOBIG if a field exceeds its wire
 * width, NW_EINVAL for a zero stream id where one is required. */
int nw_mux_pack_open(uint8_t *out, size_t cap, uint32_t sid, uint8_t flags, const char *method,
                     size_t method_len, const char *target, size_t target_len,
                     const nw_hdr_t *hdrs, size_t nhdrs);
int nw_mux_pack_head(uint8_t *out, size_t cap, uint32_t sid, uint8_t flags, uint16_t status,
                     const char *reason, size_t reason_len, const nw_hdr_t *hdrs, size_t nhdrs);
/* Writes only the 6-byte header of a DATA frame; the payload follows it. */
int nw_mux_pack_data_hdr(uint8_t *out, size_t cap, uint32_t sid, uint8_t flags);
int nw_mux_pack_window(uint8_t *out, size_t cap, uint32_t sid, uint32_t incr);
int nw_mux_pack_rst(uint8_t *out, size_t cap, uint32_t sid, uint32_t code);
int nw_mux_pack_goaway(uint8_t *out, size_t cap, uint32_t last_sid, uint32_t code);

const char *nw_mux_type_name(uint8_t type);
const char *nw_mux_code_name(uint32_t code);

#endif
