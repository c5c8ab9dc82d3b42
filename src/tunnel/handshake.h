/* handshake.h: the tunnel upgrade as both ends speak it: header names,
 * the receive-window bounds and default, the X-Natwrp-Window parse, the
 * subprotocol check, and the AGENT_ID syntax. serve (src/serve/upgrade.c)
 * answers the upgrade; the agent sends it and checks the 101. */
#ifndef NW_HANDSHAKE_H
#define NW_HANDSHAKE_H

#include "http1.h"
#include "ws.h"

/* Request (agent -> serve) and response fields; nw_hf_find ignores case. */
#define NW_HS_AGENT "X-Natwrp-Agent"     /* this tunnel's name (AGENT_ID or AGENT_ID-k) */
#define NW_HS_GROUP "X-Natwrp-Group"     /* MAX_CONN > 1: the AGENT_ID its tunnels share */
#define NW_HS_WINDOW "X-Natwrp-Window"   /* the sender's per-stream receive window */
#define NW_HS_VERSION "X-Natwrp-Version" /* on a refusal for a subprotocol mismatch */
#define NW_HS_SUBPROTO NW_WS_SUBPROTO    /* Sec-WebSocket-Protocol both ends must name */
#define NW_HS_SUBPROTO_PREFIX "natwrp."  /* any version of it (screened off other paths) */
#define NW_HS_FIELD_PREFIX "x-natwrp-"   /* fields that only the tunnel path may carry */
#define NW_HS_ROUTES "X-Natwrp-Routes"   /* agent: its ROUTES; serve's 101: those granted, as URLs */
#define NW_HS_INTERIM "X-Natwrp-Interim" /* serve's 101: "1", it takes interim (1xx) HEADs */
#define NW_HS_INSTANCE "X-Natwrp-Instance" /* agent: PROCESS-ADDRESS, random hex (nw_hs_coexist) */
#define NW_HS_INSTANCE_MAX 64            /* longest X-Natwrp-Instance value serve keeps */
#define NW_HS_AUTH_BASIC "X-Natwrp-Auth-Basic" /* base64 of user:password, one per credential */
#define NW_HS_BASIC_MAX 64               /* X-Natwrp-Auth-Basic fields in one upgrade */
#define NW_HS_BASIC_LEN 512              /* longest user:password serve takes */

/* Per-stream receive window: bounds of X-Natwrp-Window, and its value
 * when the field is absent (an older peer). */
#define NW_HS_WINDOW_MIN 1024u
#define NW_HS_WINDOW_MAX 0x7fffffffu /* NW_MUX_MAX_WINDOW */
#define NW_HS_WINDOW_DEFAULT 262144u

/* AGENT_ID: 1-128 of A-Z a-z 0-9 . _ @ : + -; a MAX_CONN tunnel's name
 * adds "-k" (up to 139). */
#define NW_HS_AGENT_ID_MAX 128
#define NW_HS_TUNNEL_NAME_MAX 139

/* The peer's window from h's X-Natwrp-Window into *out
 * (NW_HS_WINDOW_DEFAULT when absent). 0, or -1 when it is not a number
 * within the bounds. */
int nw_hs_window(const nw_hfields_t *h, uint32_t *out);
/* serve: does the request offer NW_HS_SUBPROTO (a token of any
 * Sec-WebSocket-Protocol field)? */
int nw_hs_subproto_offered(const nw_hfields_t *h);
/* agent: did the 101 select exactly NW_HS_SUBPROTO? */
int nw_hs_subproto_selected(const nw_hfields_t *h);
/* Is p[0..n) an AGENT_ID of at most max_len bytes? */
int nw_hs_agent_id_ok(const char *p, size_t n, size_t max_len);
/* serve: is p[0..n) a valid X-Natwrp-Instance value (1 to NW_HS_INSTANCE_MAX
 * of 0-9 a-z A-Z, one '-' parting the process from the address part)? */
int nw_hs_instance_ok(const char *p, size_t n);
/* serve: may a new tunnel of instance b keep a live tunnel of the same name
 * and instance a, instead of replacing it? Yes when both come from one
 * agent process (same part before '-') through different addresses of
 * its (different part after): two of its addresses reach this one server
 * (127.0.0.1 and ::1 of a dual-stack listener, one address under two
 * names). A restarted agent (another process part), a slot reconnecting
 * (the same value), or an agent that sends none replaces, as before. */
int nw_hs_coexist(const char *a, const char *b);

#endif
