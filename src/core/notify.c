/* notify.c: sd_notify(3) without libsystemd. The protocol is a datagram
 * of newline-separated VAR=VALUE lines sent to the AF_UNIX socket named by
 * $NOTIFY_SOCKET (a path, or '@name' in the abstract namespace), as
 * documented by systemd (sd_notify(3), "Notification protocol"). Messages
 * are rare (start, reload, stop, a watchdog tick), so each one opens and
 * closes its own socket. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "notify.h"

int nw_notify_addr(const char *value, struct sockaddr_un *sa, socklen_t *len) {
    size_t n;
    if (!value || (value[0] != '/' && value[0] != '@'))
        return -1;
    n = strlen(value);
    if (n < 2 || n > sizeof(sa->sun_path))
        return -1;
    memset(sa, 0, sizeof(*sa));
    sa->sun_family = AF_UNIX;
    memcpy(sa->sun_path, value, n);
    if (value[0] == '@') {
        sa->sun_path[0] = '\0'; /* abstract: the length counts, no terminator */
        *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
    } else {
        if (n == sizeof(sa->sun_path))
            return -1; /* no room for the terminating NUL */
        *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
    }
    return 0;
}

uint64_t nw_watchdog_usec(const char *usec, const char *pid, long self) {
    char *end;
    unsigned long long v;
    if (!usec || !*usec || *usec < '0' || *usec > '9')
        return 0;
    errno = 0;
    v = strtoull(usec, &end, 10);
    if (errno || *end || v == 0)
        return 0;
    if (pid && *pid) {
        long p;
        if (*pid < '0' || *pid > '9')
            return 0;
        errno = 0;
        p = strtol(pid, &end, 10);
        if (errno || *end || p != self)
            return 0; /* meant for another process (our parent, say) */
    }
    return (uint64_t)v;
}

int nw_notify(const char *msg) {
    static int warned;
    struct sockaddr_un sa;
    socklen_t len;
    const char *env = getenv("NOTIFY_SOCKET");
    int fd, rc = 1;
    if (!env || !*env)
        return 0;
    if (nw_notify_addr(env, &sa, &len) != 0) {
        if (!warned++)
            nw_warn("NOTIFY_SOCKET=%s: not an absolute path or @name: not notifying systemd", env);
        return -EINVAL;
    }
    fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        rc = -errno;
    /* Never wait: a manager that reads nothing (hung, or not systemd at
     * all) would otherwise stop the event loop once its queue is full. */
    else if (sendto(fd, msg, strlen(msg), MSG_NOSIGNAL | MSG_DONTWAIT, (struct sockaddr *)&sa,
                    len) < 0)
        rc = -errno;
    if (fd >= 0)
        close(fd);
    if (rc < 0 && !warned++)
        nw_warn("NOTIFY_SOCKET=%s: %s (systemd is not told about this process's state)", env,
                uv_strerror(rc));
    return rc;
}

int nw_notifyf(const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    return nw_notify(msg);
}

void nw_notify_reloading(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    nw_notifyf("RELOADING=1\nMONOTONIC_USEC=%llu\nSTATUS=reloading",
               (unsigned long long)ts.tv_sec * 1000000ull + (unsigned long long)ts.tv_nsec / 1000);
}

static void on_watchdog(uv_timer_t *h) {
    (void)h;
    nw_notify("WATCHDOG=1");
}

void nw_watchdog_start(uv_loop_t *loop, uv_timer_t *h) {
    const char *sock = getenv("NOTIFY_SOCKET");
    uint64_t usec = nw_watchdog_usec(getenv("WATCHDOG_USEC"), getenv("WATCHDOG_PID"),
                                     (long)getpid());
    uint64_t ms;
    uv_timer_init(loop, h);
    uv_unref((uv_handle_t *)h); /* never keeps the loop alive */
    if (!usec || !sock || !*sock)
        return;
    ms = usec / 2000; /* half the interval, as sd_watchdog_enabled(3) advises */
    if (ms == 0)
        ms = 1;
    nw_info("systemd watchdog: WATCHDOG=1 every %llu ms (WATCHDOG_USEC=%llu)",
            (unsigned long long)ms, (unsigned long long)usec);
    nw_notify("WATCHDOG=1");
    uv_timer_start(h, on_watchdog, ms, ms);
}
