/* notify.h: the systemd notification protocol (sd_notify(3)) without
 * libsystemd: one datagram per state change to $NOTIFY_SOCKET, and the
 * watchdog keep-alive when $WATCHDOG_USEC asks for it. With NOTIFY_SOCKET
 * unset every call is a no-op. */
#ifndef NW_NOTIFY_H
#define NW_NOTIFY_H

#include <sys/socket.h>
#include <sys/types.h>
#include <sys/un.h>
#include <uv.h>

#include "nw.h"

/* The address in a NOTIFY_SOCKET value: an absolute path, or '@' then a
 * name in the abstract namespace. 0 with *sa and *len filled; -1 when the
 * value is empty, relative or too long (pure). */
int nw_notify_addr(const char *value, struct sockaddr_un *sa, socklen_t *len);

/* The watchdog interval in µs that WATCHDOG_USEC and WATCHDOG_PID give
 * the process self: 0 when off (usec unset, not a positive number, or
 * pid set and not self) (pure). */
uint64_t nw_watchdog_usec(const char *usec, const char *pid, long self);

/* Send one message ("READY=1", several lines joined by '\n') to
 * NOTIFY_SOCKET. 1 sent, 0 nothing to do (unset), or a negative errno
 * (logged once per process; the service goes on). */
int nw_notify(const char *msg);
int nw_notifyf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Around a SIGHUP reload: RELOADING=1 with MONOTONIC_USEC (as systemd
 * wants for Type=notify-reload), and READY=1 when done. */
void nw_notify_reloading(void);

/* The watchdog timer: h is initialised always (so the owner closes it
 * with its other handles) and, when WATCHDOG_USEC is set for this pid and
 * NOTIFY_SOCKET too, sends WATCHDOG=1 every WATCHDOG_USEC/2. It never
 * keeps the loop alive. */
void nw_watchdog_start(uv_loop_t *loop, uv_timer_t *h);

#endif
